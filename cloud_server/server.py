"""One cloud process: uvicorn (HTTP) and grpc.aio on one asyncio loop over one engine.

SIGTERM / SIGINT: the engine stops admitting and ends active requests (their streams get an
``End`` with reason error, so devices finish locally), gRPC health turns NOT_SERVING, both
listeners drain within ``shutdown_grace_s``, then the worker thread is joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from common.model import load_model
from common.platform import select_platform, set_threads
from common.settings import SplitSettings

from .app_grpc import create_grpc_server, mark_serving
from .app_http import create_http_app
from .config import ServerConfig
from .engine import Engine
from .engine_api import CloudEngine

log = logging.getLogger(__name__)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handlers: ``serve`` owns shutdown for both listeners."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_builtin_engine(config: ServerConfig) -> Engine:
    set_threads(config.threads)
    loaded = load_model(config.model, select_platform(config.device), config.dtype)
    log.info(
        "model %s loaded on %s (fingerprint %s)",
        loaded.name,
        loaded.platform.name,
        loaded.fingerprint,
    )
    return Engine(loaded, config.engine)


def build_vllm_engine(config: ServerConfig) -> CloudEngine:
    try:
        from .vllm_engine import build_vllm_engine as build
    except ImportError as err:
        raise SystemExit(
            f"--engine vllm needs vLLM ({err}); install the extra: pip install -e '.[vllm]'"
        ) from None
    return build(config)


ENGINES = {"builtin": build_builtin_engine, "vllm": build_vllm_engine}


def build_engine(config: ServerConfig) -> CloudEngine:
    """The engine ``config.engine_kind`` names (the front ends see one interface)."""
    return ENGINES[config.engine_kind](config)


def check_settings_for(settings: SplitSettings | None, engine: CloudEngine) -> None:
    """Settings that plan refinement cannot be served by an engine that cannot score prompts:
    every refined answer would stall (its N assumes a shorter device prefill)."""
    if settings is None or engine.can_score_prompts:
        return
    refined = [b.max_prompt_len for b in settings.buckets if b.refine_ratio > 0]
    if refined:
        raise SystemExit(
            f"--settings: buckets max_prompt_len={refined} have refine_ratio > 0, but this engine "
            "cannot score prompts; re-tune with `pdd tune --cloud-engine vllm` (refine_ratio 0)"
        )


async def serve(config: ServerConfig) -> None:
    settings = SplitSettings.load(config.settings_path) if config.settings_path else None
    engine = build_engine(config)
    check_settings_for(settings, engine)
    engine.start()
    http = _HttpServer(
        uvicorn.Config(
            create_http_app(engine, config.security, settings),
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            lifespan="off",
            timeout_graceful_shutdown=max(1, round(config.shutdown_grace_s)),
        )
    )
    grpc_server = health = None
    if config.grpc_port is not None:
        grpc_server, health = create_grpc_server(
            engine, f"{config.host}:{config.grpc_port}", config.security
        )
        await grpc_server.start()
        await mark_serving(health)
        log.info("gRPC listening on %s:%d", config.host, config.grpc_port)

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s: shutting down", sig.name)
        engine.close()
        http.handle_exit(sig, None)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await http.serve()
    finally:
        engine.close()
        if health is not None:
            await health.enter_graceful_shutdown()
        if grpc_server is not None:
            await grpc_server.stop(config.shutdown_grace_s)
        await asyncio.to_thread(engine.stop)
        log.info("cloud server stopped")
