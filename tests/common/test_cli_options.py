"""One schema from config to command line: a knob is a field, an option and its help at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import typer
from typer.testing import CliRunner

from cloud_server.config import EngineConfig, ServerConfig
from common.cli_options import command_from, from_options, knob, nested, option_parameters


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
