"""``pdd chat``: an interactive chat over one session (cloud and device tokens in two colours).

Reads one user message per line from stdin (a terminal or a pipe); ``/new`` starts a new
session, ``/exit`` (or end of input) quits. After each answer one line sums the turn up: mode,
TTFT, handoff index, and how many prompt tokens the device's cache already held (and the
cloud's prefix cache, from its end event).
"""

from __future__ import annotations

import contextlib
import json
import sys

import typer
from rich.console import Console

from common.cli_options import command_from
from common.errors import PDError

from .cli import _COLOURS, GenerateOptions, _fail, client_setup
from .types import GenerationResult, Mode

_COMMANDS = "/new starts a new session, /exit quits"


@command_from(GenerateOptions, on_error=lambda message: _fail(Console(), message))
def chat(
    opts: GenerateOptions,
    system: str = typer.Option(None, help="system prompt of the session"),
) -> None:
    """Chat with P/D-Device: the device keeps the conversation's KV cache between turns.

    The options are ``pdd generate``'s; ``--json`` prints one JSON object per turn."""
    console = Console(stderr=opts.as_json)
    if opts.raw:
        _fail(console, "a chat needs the chat template: --raw does not apply")
    _, sampling, options = client_setup(opts, console)
    turn_args = {
        "max_tokens": opts.max_tokens,
        "mode": opts.mode,
        "cloud_tokens": opts.cloud_tokens,
        "refine_ratio": opts.refine_ratio,
        "sampling": sampling,
    }
    cloud = opts.cloud
    with contextlib.ExitStack() as stack:
        if opts.mode is not Mode.DEVICE and (opts.embedded or cloud is None):
            from .embedded import embedded_cloud

            console.print("[dim]starting an embedded cloud on loopback...[/dim]")
            proc = stack.enter_context(
                embedded_cloud("--model", opts.model, threads=opts.cloud_threads)
            )
            cloud = proc.url(opts.transport or "http")
        from .client import DeviceClient  # torch and transformers load only now

        try:
            client = DeviceClient(cloud, model=opts.model, transport=opts.transport, **options)
        except (PDError, ValueError, FileNotFoundError) as err:
            _fail(console, str(getattr(err, "message", err)))
        stack.callback(client.close)
        _loop(console, client, system, turn_args, opts.as_json)


def _loop(console: Console, client, system: str | None, turn_args: dict, as_json: bool) -> None:
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
                if not as_json:
                    style = _COLOURS[tok.source] if console.is_terminal else None
                    console.print(tok.text, style=style, end="", soft_wrap=True, highlight=False)
        except PDError as err:
            console.print(f"[red]error:[/red] {err.message}")
            continue
        result, turn = session.last_answer.result, session.turns[-1]
        if result is None:
            continue
        if as_json:
            record = {"turn": len(session.turns), **result.to_json_dict()}
            print(json.dumps(record | {"rerendered": turn.rerendered}), flush=True)
        else:
            _summary(console, len(session.turns), result, turn.rerendered)


def _summary(console: Console, turn: int, r: GenerationResult, rerendered: str | None) -> None:
    cloud_n = r.sources.count("cloud")
    console.print()
    line = (
        f"[dim]turn {turn}[/dim]  [bold]{r.mode.value}[/bold]  TTFT {1000 * (r.ttft_s or 0):.0f} ms"
        f"  handoff {'-' if r.handoff_index is None else r.handoff_index}"
        f"  cached {r.cached_prompt_tokens}/{r.prompt_tokens} prompt tokens"
        f" (cloud {'-' if r.cloud_cached_tokens is None else r.cloud_cached_tokens})"
        f"  tokens {len(r.tokens)} ([cyan]cloud {cloud_n}[/cyan], "
        f"[green]device {len(r.tokens) - cloud_n}[/green])"
    )
    if r.fallback:
        line += f"\n[yellow]fallback:[/yellow] {r.fallback}"
    if rerendered:
        line += f"\n[yellow]full prefill:[/yellow] {rerendered}"
    console.print(line, soft_wrap=True, highlight=False)
