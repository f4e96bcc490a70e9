"""``pdd serve`` / ``python -m cloud_server``: the cloud server (HTTP + gRPC, one engine);
``pdd gateway`` / ``python -m cloud_server.gateway_main``: on-demand forwarding over instances."""

from __future__ import annotations

import asyncio
import logging
import os

import typer
from pydantic import ValidationError

from .config import EngineConfig, SecurityConfig, ServerConfig, VllmOptions

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


def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, help="HTTP port"),
    grpc_port: int = typer.Option(50051, help="gRPC port; 0 disables gRPC"),
    model: str = typer.Option("smollm2-135m", help="model alias or local transformers folder"),
    threads: int = typer.Option(0, help="torch threads; 0 keeps torch's default"),
    device: str = typer.Option("auto", help="auto | npu | cuda | cpu"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16"),
    max_concurrent: int = typer.Option(4, help="requests served at once; more are rejected"),
    max_queue: int = typer.Option(0, help="requests that may wait for a slot; 0 rejects at once"),
    max_prompt_tokens: int = typer.Option(0, help="longest prompt accepted; 0: model context"),
    prefill_chunk_tokens: int = typer.Option(
        512, min=0, help="prompt tokens prefilled between two decode rounds; 0: whole prompts first"
    ),
    log_level: str = typer.Option("info", help="debug | info | warning | error"),
    settings: str = typer.Option(None, help="SplitSettings JSON, served at GET /v1/pd/settings"),
    api_key_file: str = typer.Option(
        None, help=f"bearer keys, one per line ('#' comments); also env {API_KEYS_ENV}"
    ),
    max_body_bytes: int = typer.Option(1 << 20, help="larger request bodies get HTTP 413"),
    engine: str = typer.Option("builtin", help="builtin | vllm (needs the vllm extra)"),
    vllm_kv_cache_gib: int = typer.Option(1, min=0, help="vllm on CPU: KV cache GiB; 0: vLLM's"),
    vllm_gpu_memory_utilization: float = typer.Option(
        0.9, min=0.05, max=1.0, help="vllm on CUDA / Ascend: share of device memory it may use"
    ),
    vllm_max_model_len: int = typer.Option(0, min=0, help="vllm: context length; 0: the model's"),
    vllm_enforce_eager: bool = typer.Option(
        False, help="vllm: no torch.compile (faster start, slower steps)"
    ),
) -> None:
    """Serve the cloud half of P/D-Device: prefill, first token and N cloud tokens."""
    check_settings(settings)
    if engine not in ("builtin", "vllm"):
        raise typer.BadParameter(f"--engine {engine!r}: choose builtin or vllm")
    config = ServerConfig(
        host=host,
        port=port,
        grpc_port=grpc_port or None,
        model=model,
        threads=threads or None,
        device=device,
        dtype=dtype,
        log_level=log_level,
        engine=EngineConfig(
            max_concurrent_requests=max_concurrent,
            max_queue=max_queue,
            max_prompt_tokens=max_prompt_tokens or None,
            prefill_chunk_tokens=prefill_chunk_tokens,
        ),
        engine_kind=engine,
        vllm=VllmOptions(
            kv_cache_gib=vllm_kv_cache_gib,
            gpu_memory_utilization=vllm_gpu_memory_utilization,
            max_model_len=vllm_max_model_len or None,
            enforce_eager=vllm_enforce_eager,
        ),
        security=security_config(api_key_file, max_body_bytes),
        settings_path=settings,
    )
    setup_logging(log_level)
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
    max_body_bytes: int = typer.Option(1 << 20, help="larger request bodies get HTTP 413"),
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
