"""``pdd serve`` / ``python -m cloud_server``: the cloud server (HTTP + gRPC, one engine);
``pdd gateway`` / ``python -m cloud_server.gateway_main``: on-demand forwarding over instances."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from typing import NoReturn

import typer
from pydantic import ValidationError

from common.cli_options import command_from

from .config import API_KEYS_ENV, GatewayConfig, SecurityConfig, ServerConfig


def read_keys(security: SecurityConfig) -> SecurityConfig:
    """Read the keys now (server start): ``--api-key-file`` plus ``PDD_API_KEYS``."""
    from .security import load_api_keys

    path = security.api_key_file
    try:
        keys = load_api_keys(path, os.environ.get(API_KEYS_ENV))
    except OSError as err:
        raise typer.BadParameter(f"cannot read API key file: {err}") from None
    if path and not keys:
        raise typer.BadParameter(f"API key file {path} holds no key")
    return replace(security, api_keys=keys)


def check_settings(path: str | None) -> None:
    """Fail at start, with the reason, when ``--settings`` is not a valid SplitSettings file."""
    if path is None:
        return
    from common.settings import SplitSettings

    try:
        SplitSettings.load(path)
    except (OSError, ValueError, ValidationError) as err:
        raise typer.BadParameter(f"--settings {path}: {err}") from None


def setup_logging(log_level: str) -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _bad_parameter(message: str) -> NoReturn:
    raise typer.BadParameter(message)


@command_from(ServerConfig, on_error=_bad_parameter)
def serve(config: ServerConfig) -> None:
    """Serve the cloud half of P/D-Device: prefill, first token and N cloud tokens."""
    check_settings(config.settings_path)
    config = replace(config, security=read_keys(config.security))
    setup_logging(config.log_level)
    from .server import serve as run_server  # heavy imports (torch, fastapi) only when serving

    asyncio.run(run_server(config))


@command_from(GatewayConfig, on_error=_bad_parameter)
def gateway(config: GatewayConfig) -> None:
    """Spread requests over prefill instances with P/D-Serve's on-demand forwarding (HTTP)."""
    config = replace(config, security=read_keys(config.security))
    setup_logging(config.log_level)
    import uvicorn

    from .gateway import create_gateway_app

    app = create_gateway_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)
