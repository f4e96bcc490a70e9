"""Prometheus metrics for one cloud app, in its own registry (no process-global state)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKENS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            "pdd_ttft_seconds", "arrival to first token, on the cloud", buckets=_SECONDS, registry=r
        )
        self.prefill = Histogram(
            "pdd_prefill_seconds", "prefill time per request", buckets=_SECONDS, registry=r
        )
        self.queue = Histogram(
            "pdd_queue_seconds", "arrival to prefill start", buckets=_SECONDS, registry=r
        )
        self.cloud_tokens = Histogram(
            "pdd_cloud_tokens",
            "tokens decoded after the first token, per request",
            buckets=_TOKENS,
            registry=r,
        )
        self.busy = Histogram(
            "pdd_busy_seconds", "time a request held an engine slot", buckets=_SECONDS, registry=r
        )
        self.active = Gauge("pdd_active_requests", "requests in the engine", registry=r)
        self.rejected = Counter(
            "pdd_rejected_requests", "requests refused, by reason", ["reason"], registry=r
        )
        self.handoffs = Counter("pdd_handoffs", "requests ended by a device handoff", registry=r)
        self.requests = Counter(
            "pdd_requests", "requests finished, by end reason", ["reason"], registry=r
        )
        self.prefill_tokens = Counter(
            "pdd_prefill_tokens", "prompt tokens run through a prefill forward", registry=r
        )
        self.cached_tokens = Counter(
            "pdd_cached_prompt_tokens", "prompt tokens taken from the prefix cache", registry=r
        )

    def observe_first_token(self, ttft_s: float, queue_s: float, prefill_s: float) -> None:
        self.ttft.observe(ttft_s)
        self.queue.observe(queue_s)
        self.prefill.observe(prefill_s)

    def observe_prefill(self, num_tokens: int, num_cached: int) -> None:
        """One prefill forward of ``num_tokens``; ``num_cached``: the prefix it did not need."""
        self.prefill_tokens.inc(num_tokens)
        self.cached_tokens.inc(num_cached)

    def observe_end(self, reason: str, num_tokens: int, busy_s: float) -> None:
        """``num_tokens``: tokens the cloud generated, first token included."""
        self.requests.labels(reason=reason).inc()
        self.cloud_tokens.observe(max(0, num_tokens - 1))
        self.busy.observe(busy_s)
        if reason == "handoff":
            self.handoffs.inc()

    def count_rejected(self, code: str) -> None:
        self.rejected.labels(reason=code).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
