"""``pdd generate``: one answer, printed live (cloud and device tokens in two colours)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from common.defaults import DEFAULT_MODEL
from common.errors import PDError
from common.messages import SamplingParams
from common.settings import SplitSettings

from .config import DEFAULT_EMULATION, EMULATIONS, device_emulation
from .types import GenerationResult, Mode

_COLOURS = {"cloud": "cyan", "device": "green"}


def generate(
    prompt: str = typer.Argument(..., help="the prompt (the chat template is applied)"),
    cloud: str = typer.Option(None, help="http://host:port or grpc://host:port"),
    embedded: bool = typer.Option(
        False, help="start a cloud on loopback for this answer (default when --cloud is absent)"
    ),
    mode: Mode = typer.Option(Mode.PD, help="pd | device | cloud"),
    transport: str = typer.Option(None, help="http | grpc (default: from the URL scheme)"),
    max_tokens: int = typer.Option(128, help="answer length limit"),
    cloud_tokens: int = typer.Option(None, help="N: tokens the cloud may send after the first"),
    refine_ratio: float = typer.Option(None, help="share of prompt tokens the device may skip"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    top_p: float = typer.Option(1.0),
    top_k: int = typer.Option(0),
    seed: int = typer.Option(0),
    raw: bool = typer.Option(False, help="send the prompt as is, without the chat template"),
    model: str = typer.Option(DEFAULT_MODEL, help="model alias or transformers folder"),
    threads: int = typer.Option(1, help="device torch threads"),
    cloud_threads: int = typer.Option(1, help="torch threads of an embedded cloud"),
    emulate: str = typer.Option(
        DEFAULT_EMULATION, help=f"device emulation: {' | '.join(EMULATIONS)} (printed first)"
    ),
    device_slowdown: float = typer.Option(
        None, help="emulate a device K times slower instead (1 = this machine's real speed)"
    ),
    settings: Path = typer.Option(None, help="split settings JSON (from `pdd tune`)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Answer one prompt with P/D-Device (or a baseline mode) and show where each token came from."""
    console = Console(stderr=as_json)
    try:
        emulation = device_emulation(emulate, device_slowdown)
        sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        options = {"threads": threads, "device_slowdown": emulation.slowdown}
        if settings is not None:
            options["settings"] = SplitSettings.load(settings)
    except (ValueError, OSError) as err:
        _fail(console, f"bad option: {err}")
    console.print(f"[bold]{emulation.describe()}[/bold]", highlight=False)
    use_embedded = mode is not Mode.DEVICE and (embedded or cloud is None)
    with contextlib.ExitStack() as stack:
        if use_embedded:
            from .embedded import embedded_cloud

            console.print("[dim]starting an embedded cloud on loopback...[/dim]")
            cloud_proc = stack.enter_context(
                embedded_cloud("--model", model, threads=cloud_threads)
            )
            cloud = cloud_proc.url(transport or "http")
        answer_args = {
            "max_tokens": max_tokens,
            "mode": mode,
            "cloud_tokens": cloud_tokens,
            "refine_ratio": refine_ratio,
            "sampling": sampling,
            "raw": raw,
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
    )
    if r.handoff_index is not None:
        console.print(
            f"handoff at m = {r.handoff_index} (the cloud generated {r.cloud_tokens})",
            highlight=False,
        )
    console.print(
        f"TPOT mean {1000 * (r.tpot_mean_s or 0):.0f} ms, max {1000 * (r.tpot_max_s or 0):.0f} ms",
        highlight=False,
    )
    if r.fallback:
        console.print(f"[yellow]fallback:[/yellow] {r.fallback}")


def _fail(console: Console, message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    sys.exit(2)
