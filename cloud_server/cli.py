"""``pdd serve`` / ``python -m cloud_server``: start the cloud server (HTTP + gRPC, one engine)."""

from __future__ import annotations

import asyncio
import logging

import typer

from .config import EngineConfig, ServerConfig


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
    log_level: str = typer.Option("info", help="debug | info | warning | error"),
) -> None:
    """Serve the cloud half of P/D-Device: prefill, first token and N cloud tokens."""
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
        ),
    )
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from .server import serve as run_server  # heavy imports (torch, fastapi) only when serving

    asyncio.run(run_server(config))
