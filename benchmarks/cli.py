"""``pdd``: one console entry point; each component owns its subcommands, registered here."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="pd-device: split LLM answers between a cloud prefill service and the device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registration: one line per command, the implementation lives in its component.
# (cloud_server.cli: serve, gateway; device_client.cli: generate; benchmarks: bench, profile, tune,
# simulate.)
