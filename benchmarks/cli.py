"""``pdd``: one console entry point; each component owns its subcommands, registered here."""

from __future__ import annotations

import typer

from benchmarks.bench.command import bench_command
from benchmarks.planner.profile import profile_app
from benchmarks.planner.simulator import simulate_command
from benchmarks.planner.tuner import tune_command
from benchmarks.planner.tuner_check import tuner_check_command
from benchmarks.studies.commands import study_app
from cloud_server.cli import gateway as cloud_gateway
from cloud_server.cli import serve as cloud_serve
from device_client.chat_cli import chat
from device_client.cli import generate

app = typer.Typer(
    help="pd-device: split LLM answers between a cloud prefill service and the device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registration: one line per command, the implementation lives in its component.
# (cloud_server.cli: serve, gateway; device_client: generate, chat; benchmarks: bench, tune,
# tuner-check, simulate, `pdd profile device|cloud|list` and the studies under `pdd study`.)
app.command("serve")(cloud_serve)
app.command("gateway")(cloud_gateway)
app.command("bench")(bench_command)
app.add_typer(profile_app, name="profile")
app.command("tune")(tune_command)
app.command("tuner-check")(tuner_check_command)
app.command("simulate")(simulate_command)
app.add_typer(study_app, name="study")
app.command("generate")(generate)
app.command("chat")(chat)


if __name__ == "__main__":
    app()
