"""Cloud configuration: one frozen dataclass per component, passed down whole.

``pdd serve`` flags, ``python -m cloud_server`` and tests all build a ``ServerConfig``; nothing
reads environment variables here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EngineConfig:
    """What the engine admits and how it reports overload."""

    max_concurrent_requests: int = 4  # requests holding a slot (prefill or decode) at once
    max_queue: int = 0  # requests waiting for a slot; 0 rejects at once when all slots are busy
    max_prompt_tokens: int | None = None  # None: the model's context length minus one
    retry_after_s: float = 1.0  # hint sent with an overload rejection (HTTP Retry-After)
    num_recent_ids: int = 1024  # finished request ids remembered, so a late handoff is not a 404
    # Chunked prefill: while requests are decoding, at most this many prompt tokens are
    # prefilled between two decode rounds, so a long prompt pauses the others' streams for one
    # chunk, not its whole prefill. 0: whole prompts, prefill first.
    prefill_chunk_tokens: int = 512

    def __post_init__(self) -> None:
        if self.max_concurrent_requests < 1:
            raise ValueError("max_concurrent_requests must be at least 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if self.prefill_chunk_tokens < 0:
            raise ValueError("prefill_chunk_tokens must be >= 0 (0: no chunking)")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError("max_prompt_tokens must be at least 1")


@dataclass(frozen=True)
class VllmOptions:
    """``--engine vllm`` only: vLLM's own knobs. Admission and limits stay in ``EngineConfig``;
    dtype, threads and log level come from ``ServerConfig``."""

    kv_cache_gib: int = 1  # CPU KV cache (VLLM_CPU_KVCACHE_SPACE); 0: vLLM's default
    gpu_memory_utilization: float = 0.9  # CUDA / Ascend: share of device memory vLLM may use
    max_model_len: int | None = None  # None: the model's context length
    enable_prefix_caching: bool = True
    enforce_eager: bool = False  # True: no torch.compile (faster start, slower steps)


@dataclass(frozen=True)
class SecurityConfig:
    """API keys and request limits; shared by ``pdd serve`` and ``pdd gateway``."""

    api_keys: frozenset[str] = field(default=frozenset(), repr=False)  # empty: auth off
    max_body_bytes: int = 1 << 20  # larger request bodies get HTTP 413 before any parsing

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")


@dataclass(frozen=True)
class ServerConfig:
    """One cloud process: HTTP and gRPC over one engine."""

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 50051  # None: no gRPC listener
    model: str = "smollm2-135m"
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    device: str = "auto"  # auto | npu | cuda | cpu | a torch device string
    dtype: str = "float32"
    log_level: str = "info"
    shutdown_grace_s: float = 5.0
    engine: EngineConfig = field(default_factory=EngineConfig)
    engine_kind: str = "builtin"  # builtin | vllm (cloud_server.server.ENGINES)
    vllm: VllmOptions = field(default_factory=VllmOptions)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    settings_path: str | None = None  # SplitSettings JSON served at GET /v1/pd/settings
