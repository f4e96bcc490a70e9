"""``pdd chat``: an interactive chat over one session (cloud and device tokens in two colours).

Reads one user message per line from stdin (a terminal or a pipe); ``/new`` starts a new
session, ``/exit`` (or end of input) quits. After each answer one line sums the turn up: mode,
TTFT, handoff index, and how many prompt tokens the device's cache already held.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer
from rich.console import Console

from common.errors import PDError
from common.messages import SamplingParams
from common.settings import SplitSettings

from .cli import _COLOURS, _fail
from .types import GenerationResult, Mode

_COMMANDS = "/new starts a new session, /exit quits"


def chat(
    system: str = typer.Option(None, help="system prompt of the session"),
    cloud: str = typer.Option(None, help="http://host:port or grpc://host:port"),
    embedded: bool = typer.Option(
        False, help="start a cloud on loopback for this chat (default when --cloud is absent)"
    ),
    mode: Mode = typer.Option(Mode.PD, help="pd | device | cloud"),
    transport: str = typer.Option(None, help="http | grpc (default: from the URL scheme)"),
    max_tokens: int = typer.Option(128, help="answer length limit per turn"),
    cloud_tokens: int = typer.Option(None, help="N: tokens the cloud may send after the first"),
    refine_ratio: float = typer.Option(None, help="share of prompt tokens the device may skip"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    top_p: float = typer.Option(1.0),
    top_k: int = typer.Option(0),
    seed: int = typer.Option(0),
    model: str = typer.Option("smollm2-135m", help="model alias or transformers folder"),
    threads: int = typer.Option(1, help="device torch threads"),
    cloud_threads: int = typer.Option(1, help="torch threads of an embedded cloud"),
    device_slowdown: float = typer.Option(1.0, help="emulate a device K times slower"),
    settings: Path = typer.Option(None, help="split settings JSON (from `pdd tune`)"),
) -> None:
    """Chat with P/D-Device: the device keeps the conversation's KV cache between turns."""
    console = Console()
    try:
        sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        options = {"threads": threads, "device_slowdown": device_slowdown}
        if settings is not None:
            options["settings"] = SplitSettings.load(settings)
    except (ValueError, OSError) as err:
        _fail(console, f"bad option: {err}")
    turn_args = {
        "max_tokens": max_tokens,
        "mode": mode,
        "cloud_tokens": cloud_tokens,
        "refine_ratio": refine_ratio,
        "sampling": sampling,
    }
    with contextlib.ExitStack() as stack:
        if mode is not Mode.DEVICE and (embedded or cloud is None):
            from .embedded import embedded_cloud

            console.print("[dim]starting an embedded cloud on loopback...[/dim]")
            proc = stack.enter_context(embedded_cloud("--model", model, threads=cloud_threads))
            cloud = proc.url(transport or "http")
        from .client import DeviceClient  # torch and transformers load only now

        try:
            client = DeviceClient(cloud, model=model, transport=transport, **options)
        except (PDError, ValueError, FileNotFoundError) as err:
            _fail(console, str(getattr(err, "message", err)))
        stack.callback(client.close)
        _loop(console, client, system, turn_args)


def _loop(console: Console, client, system: str | None, turn_args: dict) -> None:
    session = client.session(system)
    is_tty = console.is_terminal and sys.stdin.isatty()
    if is_tty:
        console.print(f"[dim]{_COMMANDS}[/dim]")
    while True:
        if is_tty:
            console.print("[bold]you>[/bold] ", end="")
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return
        message = line.strip()
        if not message:
            continue
        if message == "/new":
            session.close()
            session = client.session(system)
            console.print("[dim]new session[/dim]")
            continue
        try:
            for tok in session.stream(message, **turn_args):
                style = _COLOURS[tok.source] if console.is_terminal else None
                console.print(tok.text, style=style, end="", soft_wrap=True, highlight=False)
        except PDError as err:
            console.print(f"[red]error:[/red] {err.message}")
            continue
        result = session.last_answer.result
        if result is not None:
            _summary(console, len(session.turns), result, session.turns[-1].rerendered)


def _summary(console: Console, turn: int, r: GenerationResult, rerendered: str | None) -> None:
    cloud_n = r.sources.count("cloud")
    console.print()
    line = (
        f"[dim]turn {turn}[/dim]  [bold]{r.mode.value}[/bold]  TTFT {1000 * (r.ttft_s or 0):.0f} ms"
        f"  handoff {'-' if r.handoff_index is None else r.handoff_index}"
        f"  cached {r.cached_prompt_tokens}/{r.prompt_tokens} prompt tokens"
        f"  tokens {len(r.tokens)} ([cyan]cloud {cloud_n}[/cyan], "
        f"[green]device {len(r.tokens) - cloud_n}[/green])"
    )
    if r.fallback:
        line += f"\n[yellow]fallback:[/yellow] {r.fallback}"
    if rerendered:
        line += f"\n[yellow]full prefill:[/yellow] {rerendered}"
    console.print(line)
