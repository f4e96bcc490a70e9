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

from .config import SecurityConfig, ServerConfig

API_KEYS_ENV = "PDD_API_KEYS"


def security_config(api_key_file: str | None, max_body_bytes: int) -> SecurityConfig:
    """Read the keys now (server start): ``--api-key-file`` plus ``PDD_API_KEYS``."""
    from .security import load_api_keys

    try:
        keys = load_api_keys(api_key_file, os.environ.get(API_KEYS_ENV))
    except OSError as err:
        raise typer.BadParameter(f"cannot read API key file: {err}") from None
    if api_key_file and not keys:
        raise typer.BadParameter(f"API key file {api_key_file} holds no key")
    return SecurityConfig(api_keys=keys, max_body_bytes=max_body_bytes)


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
def serve(
    config: ServerConfig,
    api_key_file: str = typer.Option(
        None, help=f"bearer keys, one per line ('#' comments); also env {API_KEYS_ENV}"
    ),
    max_body_bytes: int = typer.Option(
        SecurityConfig.max_body_bytes, help="larger request bodies get HTTP 413"
    ),
) -> None:
    """Serve the cloud half of P/D-Device: prefill, first token and N cloud tokens."""
    check_settings(config.settings_path)
    config = replace(config, security=security_config(api_key_file, max_body_bytes))
    setup_logging(config.log_level)
    from .server import serve as run_server  # heavy imports (torch, fastapi) only when serving

    asyncio.run(run_server(config))


def gateway(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8080, help="HTTP port"),
    upstream: list[str] = typer.Option(None, help="prefill instance URL (repeatable)"),
    upstream_dns: str = typer.Option(None, help="HOST:PORT re-resolved; each address an instance"),
    max_forwards: int = typer.Option(2, help="next instances tried after a 429 or failure"),
    health_interval_s: float = typer.Option(2.0, help="seconds between health checks"),
    api_key_file: str = typer.Option(
        None, help=f"bearer keys, one per line ('#' comments); also env {API_KEYS_ENV}"
    ),
    max_body_bytes: int = typer.Option(
        SecurityConfig.max_body_bytes, help="larger request bodies get HTTP 413"
    ),
    log_level: str = typer.Option("info", help="debug | info | warning | error"),
) -> None:
    """Spread requests over prefill instances with P/D-Serve's on-demand forwarding (HTTP)."""
    from .gateway import GatewayConfig, create_gateway_app

    try:
        config = GatewayConfig(
            upstreams=tuple(upstream or ()),
            upstream_dns=upstream_dns,
            max_forwards=max_forwards,
            health_interval_s=health_interval_s,
            security=security_config(api_key_file, max_body_bytes),
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    setup_logging(log_level)
    import uvicorn

    uvicorn.run(create_gateway_app(config), host=host, port=port, log_level=log_level)
