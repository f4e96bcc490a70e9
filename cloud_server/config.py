"""Cloud configuration: one frozen dataclass per component, passed down whole.

``pdd serve`` flags, ``python -m cloud_server`` and tests all build a ``ServerConfig``; nothing
reads environment variables here. A field declared with ``knob(default, help)`` is also a
``pdd serve`` option (``common.cli_options``): a new knob costs this one edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.cli_options import knob, nested
from common.defaults import DEFAULT_MODEL


def _zero_is_none(value: int) -> int | None:
    return value or None


def _mib_to_bytes(mib: int) -> int:
    return mib << 20


@dataclass(frozen=True)
class EngineConfig:
    """What the engine admits and how it reports overload."""

    max_concurrent_requests: int = knob(
        4, "requests served at once (prefill or decode); more are rejected", flag="--max-concurrent"
    )
    max_queue: int = knob(0, "requests that may wait for a slot; 0 rejects at once")
    max_prompt_tokens: int | None = knob(
        None, "longest prompt accepted; 0: the model's context", cli_default=0, parse=_zero_is_none
    )
    retry_after_s: float = 1.0  # hint sent with an overload rejection (HTTP Retry-After)
    num_recent_ids: int = 1024  # finished request ids remembered, so a late handoff is not a 404
    # Chunked prefill: while requests are decoding, at most this many prompt tokens are
    # prefilled between two decode rounds, so a long prompt pauses the others' streams for one
    # chunk, not its whole prefill. 0: whole prompts, prefill first.
    prefill_chunk_tokens: int = knob(
        512, "prompt tokens prefilled between two decode rounds; 0: whole prompts first"
    )
    # Prefix cache: the KV of recent prompts, up to this many bytes (least recently used
    # evicted); a prompt that starts like a cached one prefills only the rest. 0: off.
    prefix_cache_bytes: int = knob(
        256 << 20,
        "MiB of recent prompts' KV kept to skip a repeated prefix; 0: off",
        flag="--prefix-cache-mb",
        cli_default=256,
        parse=_mib_to_bytes,
    )

    def __post_init__(self) -> None:
        if self.max_concurrent_requests < 1:
            raise ValueError("max_concurrent_requests must be at least 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if self.prefill_chunk_tokens < 0:
            raise ValueError("prefill_chunk_tokens must be >= 0 (0: no chunking)")
        if self.prefix_cache_bytes < 0:
            raise ValueError("prefix_cache_bytes must be >= 0 (0: no prefix cache)")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError("max_prompt_tokens must be at least 1")


@dataclass(frozen=True)
class VllmOptions:
    """``--engine vllm`` only: vLLM's own knobs. Admission and limits stay in ``EngineConfig``;
    dtype, threads and log level come from ``ServerConfig``."""

    kv_cache_gib: int = knob(
        1,
        "vllm on CPU: KV cache GiB (VLLM_CPU_KVCACHE_SPACE); 0: vLLM's",
        flag="--vllm-kv-cache-gib",
    )
    gpu_memory_utilization: float = knob(
        0.9,
        "vllm on CUDA / Ascend: share of device memory it may use",
        flag="--vllm-gpu-memory-utilization",
    )
    max_model_len: int | None = knob(
        None,
        "vllm: context length; 0: the model's",
        flag="--vllm-max-model-len",
        cli_default=0,
        parse=_zero_is_none,
    )
    enforce_eager: bool = knob(
        False, "vllm: no torch.compile (faster start, slower steps)", flag="--vllm-enforce-eager"
    )

    def __post_init__(self) -> None:
        if self.kv_cache_gib < 0:
            raise ValueError("--vllm-kv-cache-gib must be >= 0 (0: vLLM's default)")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("--vllm-gpu-memory-utilization must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("--vllm-max-model-len must be at least 1 (0: the model's)")


ENGINE_KINDS = ("builtin", "vllm")
API_KEYS_ENV = "PDD_API_KEYS"  # cloud_server.server.ENGINES builds each


@dataclass(frozen=True)
class SecurityConfig:
    """API keys and request limits; shared by ``pdd serve`` and ``pdd gateway``. The keys are
    read from ``api_key_file`` and ``PDD_API_KEYS`` at start (``cloud_server.cli``)."""

    api_keys: frozenset[str] = field(default=frozenset(), repr=False)  # empty: auth off
    api_key_file: str | None = knob(
        None, f"bearer keys, one per line ('#' comments); also env {API_KEYS_ENV}"
    )
    max_body_bytes: int = knob(1 << 20, "larger request bodies get HTTP 413")
    request_read_timeout_s: float = knob(
        30.0,
        "a request body (HTTP) or first message (gRPC) not in within this many seconds is "
        "refused (HTTP 408 / INVALID_ARGUMENT), so a stalled caller holds nothing",
    )

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        if self.request_read_timeout_s <= 0:
            raise ValueError("request_read_timeout_s must be > 0")


@dataclass(frozen=True)
class ServerConfig:
    """One cloud process: HTTP and gRPC over one engine."""

    host: str = knob("127.0.0.1", "address to listen on")
    port: int = knob(8000, "HTTP port")
    grpc_port: int | None = knob(50051, "gRPC port; 0 disables gRPC", parse=_zero_is_none)
    model: str = knob(DEFAULT_MODEL, "model alias or local transformers folder")
    threads: int | None = knob(
        None, "torch threads; 0 keeps torch's default", cli_default=0, parse=_zero_is_none
    )
    device: str = knob("auto", "auto | npu | cuda | cpu (or a torch device string)")
    dtype: str = knob("float32", "float32 | bfloat16 | float16")
    log_level: str = knob("info", "debug | info | warning | error")
    shutdown_grace_s: float = 5.0
    engine: EngineConfig = nested(EngineConfig)
    engine_kind: str = knob("builtin", "builtin | vllm (needs the vllm extra)", flag="--engine")
    vllm: VllmOptions = nested(VllmOptions)
    security: SecurityConfig = nested(SecurityConfig)  # keys are read at start
    settings_path: str | None = knob(
        None, "SplitSettings JSON, served at GET /v1/pd/settings", flag="--settings"
    )

    def __post_init__(self) -> None:
        if self.engine_kind not in ENGINE_KINDS:
            raise ValueError(
                f"--engine {self.engine_kind!r}: choose one of {', '.join(ENGINE_KINDS)}"
            )


@dataclass(frozen=True)
class GatewayConfig:
    """``pdd gateway``: where it listens and the prefill instances it forwards to."""

    host: str = knob("127.0.0.1", "address to listen on")
    port: int = knob(8080, "HTTP port")
    upstreams: tuple[str, ...] = knob(
        (), "prefill instance URL (repeatable)", flag="--upstream", cli_type=list[str], parse=tuple
    )
    upstream_dns: str | None = knob(None, "HOST:PORT re-resolved; each address an instance")
    max_forwards: int = knob(2, "next instances tried after a 429 or failure")
    health_interval_s: float = knob(2.0, "seconds between health checks")
    log_level: str = knob("info", "debug | info | warning | error")
    connect_timeout_s: float = 1.0
    num_remembered_ids: int = 10_000  # (caller, request_id) -> instance, for handoffs
    security: SecurityConfig = nested(SecurityConfig)

    def __post_init__(self) -> None:
        if not self.upstreams and not self.upstream_dns:
            raise ValueError("give at least one --upstream URL or --upstream-dns HOST:PORT")
        if self.max_forwards < 0:
            raise ValueError("max_forwards must be >= 0")
        if self.upstream_dns:
            from .gateway_upstreams import split_host_port  # httpx only when validating one

            split_host_port(self.upstream_dns)
