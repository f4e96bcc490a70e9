"""The device client's one config object, passed down whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

from common.settings import SplitSettings, default_settings

Transport = Literal["http", "grpc"]


@dataclass(frozen=True)
class NetworkEmulation:
    """A device-cloud link profile applied inside the client transport (benchmarks)."""

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0  # one-way delay varies uniformly by +-jitter/2
    bandwidth_mbps: float = 0.0  # 0 = unlimited
    seed: int = 0

    @property
    def is_active(self) -> bool:
        return self.rtt_ms > 0 or self.jitter_ms > 0 or self.bandwidth_mbps > 0


@dataclass(frozen=True)
class ClientConfig:
    cloud_url: str | None = None  # http://host:port or grpc://host:port; None = device only
    transport: Transport | None = None  # None: taken from the URL scheme
    model: str = "smollm2-135m"
    device: str = "cpu"
    threads: int | None = None
    prefill_chunk_tokens: int = 128
    device_slowdown: float = 1.0  # stretch each local forward to K x its wall time (emulation)
    connect_timeout_s: float = 1.0
    first_token_timeout_s: float = 60.0  # the device keeps prefilling meanwhile
    stall_timeout_s: float = 2.0  # longest silence from the cloud before finishing locally
    settings: SplitSettings = field(default_factory=default_settings)
    network: NetworkEmulation = NetworkEmulation()
    api_key: str | None = field(default=None, repr=False)  # sent as "Authorization: Bearer KEY"
    max_sessions: int = 4  # sessions whose KV cache the client keeps (least recently used go)

    def __post_init__(self) -> None:
        if self.cloud_url is not None:
            scheme = urlparse(self.cloud_url).scheme
            if scheme not in ("http", "https", "grpc"):
                raise ValueError(
                    f"cloud URL {self.cloud_url!r}: use http://host:port or grpc://host:port"
                )
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if self.device_slowdown < 1.0:
            raise ValueError("device_slowdown must be >= 1 (it only slows the device down)")

    @property
    def resolved_transport(self) -> Transport:
        if self.transport is not None:
            return self.transport
        scheme = urlparse(self.cloud_url or "").scheme
        return "grpc" if scheme == "grpc" else "http"
