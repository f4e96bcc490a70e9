"""``pdd generate``: one answer, printed live (cloud and device tokens in two colours)."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from common.cli_options import command_from, knob
from common.defaults import DEFAULT_MODEL
from common.errors import PDError
from common.messages import SamplingParams
from common.settings import SplitSettings

from .config import DEFAULT_EMULATION, EMULATIONS, DeviceEmulation, device_emulation
from .types import GenerationResult, Mode

_COLOURS = {"cloud": "cyan", "device": "green"}


@dataclass(frozen=True)
class GenerateOptions:
    """``pdd generate``'s options: each field is one (``common.cli_options.knob``)."""

    cloud: str | None = knob(None, "http://host:port or grpc://host:port")
    embedded: bool = knob(
        False, "start a cloud on loopback for this answer (default when --cloud is absent)"
    )
    mode: Mode = knob(Mode.PD, "pd | device | cloud")
    transport: str | None = knob(None, "http | grpc (default: from the URL scheme)")
    max_tokens: int = knob(128, "answer length limit")
    cloud_tokens: int | None = knob(None, "N: tokens the cloud may send after the first")
    refine_ratio: float | None = knob(None, "share of prompt tokens the device may skip")
    temperature: float = knob(0.0, "0 = greedy")
    top_p: float = knob(1.0, "nucleus sampling")
    top_k: int = knob(0, "top-k sampling; 0 = off")
    seed: int = knob(0, "sampling seed")
    raw: bool = knob(False, "send the prompt as is, without the chat template")
    model: str = knob(DEFAULT_MODEL, "model alias or transformers folder")
    threads: int = knob(1, "device torch threads")
    cloud_threads: int = knob(1, "torch threads of an embedded cloud")
    emulate: str = knob(
        DEFAULT_EMULATION, f"device emulation: {' | '.join(EMULATIONS)} (printed first)"
    )
    device_slowdown: float | None = knob(
        None, "emulate a device K times slower instead (1 = this machine's real speed)"
    )
    settings: Path | None = knob(None, "split settings JSON (from `pdd tune`)")
    as_json: bool = knob(False, "print one JSON object", flag="--json")


def _fail(console: Console, message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    sys.exit(2)


def client_setup(
    opts: GenerateOptions, console: Console
) -> tuple[DeviceEmulation, SamplingParams, dict]:
    """The device emulation, sampling and ``DeviceClient`` options the flags ask for; prints the
    emulation (always the first line) and exits with a message on a bad option."""
    try:
        emulation = device_emulation(opts.emulate, opts.device_slowdown)
        sampling = SamplingParams(
            temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k, seed=opts.seed
        )
        options = {"threads": opts.threads, "device_slowdown": emulation.slowdown}
        if opts.settings is not None:
            options["settings"] = SplitSettings.load(opts.settings)
    except (ValueError, OSError) as err:
        _fail(console, f"bad option: {err}")
    console.print(f"[bold]{emulation.describe()}[/bold]", highlight=False, soft_wrap=True)
    return emulation, sampling, options


@command_from(GenerateOptions, on_error=lambda message: _fail(Console(), message))
def generate(
    opts: GenerateOptions,
    prompt: str = typer.Argument(..., help="the prompt (the chat template is applied)"),
) -> None:
    """Answer one prompt with P/D-Device (or a baseline mode) and show where each token came from."""
    console = Console(stderr=opts.as_json)
    as_json, cloud, mode, transport, model = (
        opts.as_json, opts.cloud, opts.mode, opts.transport, opts.model
    )  # fmt: skip
    emulation, sampling, options = client_setup(opts, console)
    use_embedded = mode is not Mode.DEVICE and (opts.embedded or cloud is None)
    with contextlib.ExitStack() as stack:
        if use_embedded:
            from .embedded import embedded_cloud

            console.print("[dim]starting an embedded cloud on loopback...[/dim]")
            cloud_proc = stack.enter_context(
                embedded_cloud("--model", model, threads=opts.cloud_threads)
            )
            cloud = cloud_proc.url(transport or "http")
        answer_args = {
            "max_tokens": opts.max_tokens,
            "mode": mode,
            "cloud_tokens": opts.cloud_tokens,
            "refine_ratio": opts.refine_ratio,
            "sampling": sampling,
            "raw": opts.raw,
        }
        client_args = {"model": model, "transport": transport, **options}
        result = _run(console, prompt, cloud, client_args, answer_args, as_json)
    if as_json:
        print(json.dumps({**result.to_json_dict(), "device_emulation": emulation.to_json()}))
    else:
        _summary(console, result)


def _run(
    console: Console,
    prompt: str,
    cloud: str | None,
    client_args: dict,
    answer_args: dict,
    as_json: bool,
) -> GenerationResult:
    from .client import DeviceClient  # torch and transformers load only now

    try:
        client = DeviceClient(cloud, **client_args)
        answer = client.answer(prompt, **answer_args)
    except (PDError, ValueError, FileNotFoundError) as err:
        _fail(console, str(getattr(err, "message", err)))
    is_tty = console.is_terminal and not as_json
    for tok in client.stream_answer(answer):
        if not as_json:
            style = _COLOURS[tok.source] if is_tty else None
            console.print(tok.text, style=style, end="", soft_wrap=True, highlight=False)
    assert answer.result is not None
    return answer.result


def _summary(console: Console, r: GenerationResult) -> None:
    """Where the tokens came from, in words (the colours do not survive a pipe)."""
    cloud_n = r.sources.count("cloud")
    first = r.sources[0] if r.sources else "nobody"
    console.print()
    console.print(
        f"[bold]{r.mode.value}[/bold]: first token from the {first} at "
        f"{1000 * (r.ttft_s or 0):.0f} ms; [cyan]{cloud_n} cloud tokens[/cyan], then "
        f"[green]{len(r.tokens) - cloud_n} device tokens[/green]",
        highlight=False,
        soft_wrap=True,
    )
    if r.handoff_index is not None:
        console.print(
            f"handoff at m = {r.handoff_index} (the cloud generated {r.cloud_tokens})",
            highlight=False,
        )
    console.print(
        f"TPOT mean {1000 * (r.tpot_mean_s or 0):.0f} ms, max {1000 * (r.max_tpot_s or 0):.0f} ms",
        highlight=False,
    )
    if r.fallback:
        console.print(f"[yellow]fallback:[/yellow] {r.fallback}")
