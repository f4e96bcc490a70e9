"""One schema from config to command line: a knob is a field, an option and its help at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import typer
from typer.testing import CliRunner

from cloud_server.config import EngineConfig, ServerConfig
from common.cli_options import (
    command_from,
    config_json,
    from_options,
    knob,
    knobs,
    nested,
    option_parameters,
)


def _zero_is_none(value: int) -> int | None:
    return value or None


@dataclass(frozen=True)
class Inner:
    chunk: int = knob(512, "chunk size")

    def __post_init__(self) -> None:
        if self.chunk < 0:
            raise ValueError("chunk must be >= 0")


@dataclass(frozen=True)
class Outer:
    name: str = knob("x", "a name", flag="--label")
    limit: int | None = knob(None, "0: none", cli_default=0, parse=_zero_is_none)
    lens: tuple[int, ...] = knob((1, 2), "lengths", cli_type=str, parse=lambda t: tuple(
        int(x) for x in t.split(",")))  # fmt: skip
    inner: Inner = nested(Inner)
    internal: float = 1.0  # not a knob: no option


def _exit_2(message: str) -> NoReturn:
    typer.echo(message)
    raise SystemExit(2)


def _run(*args: str):
    app = typer.Typer()
    seen = []

    @command_from(Outer, on_error=_exit_2)
    def show(config: Outer, verbose: bool = typer.Option(False)) -> None:
        seen.append((config, verbose))

    app.command()(show)
    return CliRunner().invoke(app, list(args)), seen


def test_defaults_flags_nesting_and_parsing():
    res, seen = _run()
    assert res.exit_code == 0, res.output
    assert seen == [(Outer(), False)]
    res, seen = _run("--label", "y", "--limit", "3", "--lens", "4,5", "--chunk", "0", "--verbose")
    assert res.exit_code == 0, res.output
    assert seen == [(Outer("y", 3, (4, 5), Inner(0)), True)]
    assert [p.name for p in option_parameters(Outer)] == ["name", "limit", "lens", "chunk"]
    # what a result saves: the knobs (nested configs nested), not the other fields
    assert config_json(Outer("y", 3, (4, 5))) == {
        "name": "y", "limit": 3, "lens": [4, 5], "inner": {"chunk": 512}
    }  # fmt: skip


@dataclass(frozen=True)
class Required:
    path: str = knob(help="where", flag=("-o", "--out"))
    count: int = knob(1, "how many")


def test_a_knob_without_default_is_a_required_option_with_its_flags():
    app = typer.Typer()
    seen = []
    app.command()(command_from(Required, on_error=_exit_2)(lambda config: seen.append(config)))
    res = CliRunner().invoke(app, ["--count", "2"])
    assert res.exit_code == 2 and "Missing option" in res.output and seen == []
    res = CliRunner().invoke(app, ["-o", "x"])
    assert res.exit_code == 0 and seen == [Required("x", 1)]


def test_a_bad_value_goes_to_on_error():
    res, seen = _run("--chunk", "-1")
    assert res.exit_code == 2 and "chunk must be >= 0" in res.output and seen == []


def test_serve_options_are_the_server_and_engine_config_fields():
    names = {p.name for p in option_parameters(ServerConfig)}
    assert {"port", "model", "max_concurrent_requests", "prefill_chunk_tokens"} <= names
    values = {p.name: p.default.default for p in option_parameters(ServerConfig)}
    # the command line's defaults build exactly the dataclass defaults (0 -> None included)
    assert from_options(ServerConfig, values) == ServerConfig()
    assert from_options(ServerConfig, values).engine == EngineConfig()


# Commands whose options are not (yet) a config: each says why.
NOT_FROM_A_CONFIG = {
    "profile list": "no options",
    "tuner-check": "argparse-era options, a check over saved results",
    "study fleet": "owned by the fleet study",
    "study sim-validation": "owned by the simulator's validation",
}
OWN_PARAMETERS = {"generate": {"prompt"}, "chat": {"system"}}  # beside the config's knobs


def _pdd_commands(app: typer.Typer, prefix: str = "") -> dict:
    out = {prefix + info.name: info.callback for info in app.registered_commands}
    for group in app.registered_groups:
        out |= _pdd_commands(group.typer_instance, f"{prefix}{group.name} ")
    return out


def test_every_pdd_command_s_options_are_exactly_its_config_s_knobs():
    from benchmarks.cli import app

    root = typer.main.get_command(app)
    commands = _pdd_commands(app)
    assert {"tune", "simulate", "profile device", "profile cloud", "gateway", "serve"} <= set(
        commands
    )
    for name, callback in commands.items():
        if name in NOT_FROM_A_CONFIG:
            continue
        cls = getattr(callback, "config_class", None)
        assert cls is not None, f"pdd {name}: options not built from a config (command_from)"
        command = root
        for word in name.split():
            command = command.commands[word]
        options = {p.name for p in command.params}
        assert options == {f.name for f, _ in knobs(cls)} | OWN_PARAMETERS.get(name, set()), name


def test_each_command_line_s_defaults_build_the_config_s_defaults():
    from benchmarks.planner.options import SimulateOptions
    from cloud_server.config import GatewayConfig

    for cls, given in [(SimulateOptions, {}), (GatewayConfig, {"upstreams": ["http://a:1"]})]:
        values = {p.name: p.default.default for p in option_parameters(cls)} | given
        assert from_options(cls, values) == cls(**{k: tuple(v) for k, v in given.items()})
