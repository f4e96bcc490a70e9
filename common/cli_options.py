"""Command-line options built from config dataclasses: one field, one option.

A field declared with ``knob(default, "help")`` becomes ``--field-name`` with that default and
help text, so a new knob costs one edit (the dataclass) and the CLI, the saved config and the code
that reads it share one schema. ``command_from(Config)`` turns a function ``f(config, **extra)``
into a typer command whose options are the config's knobs plus ``f``'s own keyword parameters;
``config_json(config)`` is what a result saves of it. A knob without a default is a required option.
Import-light: typer is imported only when a command is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

_KNOB = "cli_knob"
_NESTED = "cli_nested"


@dataclasses.dataclass(frozen=True)
class KnobInfo:
    help: str
    flag: str | tuple[str, ...] | None = None  # the option's names when not --field-name
    cli_type: Any = None  # what the command line gives, when it is not the field's type
    parse: Callable[[Any], Any] | None = None  # command-line value -> field value
    cli_default: Any = None  # what the command line shows when it is not the field's default


def knob(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | tuple[str, ...] | None = None,
    cli_type: Any = None,
    parse: Callable[[Any], Any] | None = None,
    cli_default: Any = None,
) -> Any:
    """A dataclass field that is also a command-line option (``help`` is its help text; no
    ``default``: a required option; ``flag``: its names, e.g. ``("-o", "--output")``).

    ``cli_default`` with ``parse``: e.g. a field defaulting to None shown as ``0`` on the
    command line, where ``parse`` maps 0 back to None."""
    info = KnobInfo(help, flag, cli_type, parse, cli_default)
    return dataclasses.field(default=default, metadata={_KNOB: info})


def nested(cls: type) -> Any:
    """A field holding another config whose knobs are options of the same command (flattened)."""
    return dataclasses.field(default_factory=cls, metadata={_NESTED: cls})


def knobs(cls: type) -> list[tuple[dataclasses.Field, KnobInfo]]:
    """Every knob of ``cls``, those of nested configs included (their names must not clash)."""
    out = []
    for f in dataclasses.fields(cls):
        if _KNOB in f.metadata:
            out.append((f, f.metadata[_KNOB]))
        elif _NESTED in f.metadata:
            out += knobs(f.metadata[_NESTED])
    return out


def _hints(cls: type) -> dict[str, Any]:
    hints = dict(typing.get_type_hints(cls))
    for f in dataclasses.fields(cls):
        if _NESTED in f.metadata:
            hints.update(_hints(f.metadata[_NESTED]))
    return hints


def option_parameters(cls: type) -> list[inspect.Parameter]:
    """One keyword parameter per knob of ``cls``, its default a ``typer.Option``."""
    import typer

    hints = _hints(cls)
    params = []
    for f, info in knobs(cls):
        default = ... if f.default is dataclasses.MISSING else f.default
        if info.cli_default is not None:
            default = info.cli_default
        decls = (info.flag,) if isinstance(info.flag, str) else tuple(info.flag or ())
        annotation = info.cli_type if info.cli_type is not None else hints[f.name]
        if info.cli_default is not None and info.cli_type is None:
            annotation = type(info.cli_default)
        text = info.help
        if info.cli_type is not None and default not in (None, ...):  # as the field holds it
            shown = _as_text(default)
            text, default = (f"{text} [default: {shown}]" if shown else text), None
        option = typer.Option(default, *decls, help=text, show_default=default is not None)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=annotation))  # fmt: skip
    return params


def from_options(cls: type, values: dict[str, Any]) -> Any:
    """The config from command-line values (each knob's ``parse`` applied); ValueError if bad."""
    fields = {}
    for f in dataclasses.fields(cls):
        if _NESTED in f.metadata:
            fields[f.name] = from_options(f.metadata[_NESTED], values)
            continue
        if _KNOB not in f.metadata:
            continue
        info, value = f.metadata[_KNOB], values[f.name]
        if value is None and f.default is not dataclasses.MISSING:
            value = f.default  # not given: the field's own default
        elif value is not None and info.parse is not None:
            value = info.parse(value)
        fields[f.name] = value
    return cls(**fields)


def config_json(config: Any) -> dict[str, Any]:
    """The knobs of ``config`` (nested configs nested) as JSON-ready values: what a result saves
    of the command line that made it (fields that are not knobs, such as keys, are left out)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if _NESTED in f.metadata:
            out[f.name] = config_json(value)
        elif _KNOB in f.metadata:
            out[f.name] = _jsonable(value)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def command_from(
    cls: type, on_error: Callable[[str], NoReturn]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``f(config, **extra)`` becomes a typer command taking every knob of ``cls``
    (after ``f``'s own options); a ValueError building the config goes to ``on_error``."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(func, eval_str=True).parameters.values())[1:]
        names = {f.name for f, _ in knobs(cls)}

        def command(**kwargs: Any) -> Any:
            values = {k: kwargs.pop(k) for k in names}
            try:
                config = from_options(cls, values)
            except ValueError as err:
                on_error(str(err))
            return func(config, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        params += option_parameters(cls)
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__doc__ = func.__name__, func.__doc__
        command.__module__ = func.__module__
        command.config_class = cls  # the options tests compare the command with
        return command

    return wrap
