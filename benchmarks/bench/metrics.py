"""Per-request records and per-mode summaries, named as vLLM's ``bench serve`` names them.

All per-request metrics are taken on the tokens as displayed to the user (times since the request
started): TTFT = t(first token); E2E = t(last token); TPOT = (E2E - TTFT) / (n - 1); ITL = every gap
between two displayed tokens; max gap = the largest ITL (the handoff included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from device_client.types import GenerationResult

PERCENTILES = (50, 90, 99)
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el", "max_tpot")  # vLLM calls E2E latency "e2el"
SLO_METRICS = ("ttft", "tpot", "e2el", "max_tpot")


@dataclass
class RequestRecord:
    """One benchmark request in one mode: the SDK's ``GenerationResult`` (the per-answer metrics,
    defined once there) plus what the benchmark adds (which request, mode, start, errors)."""

    index: int  # the request (same prompt in every mode)
    mode: str  # device | cloud | pd | pd+refine
    input_len: int
    output_len: int  # max_tokens asked for
    start_s: float  # when it started, seconds from the benchmark start
    result: GenerationResult | None = None  # None: the request failed outright
    error: str | None = None  # why it failed (no answer)
    matches_device: bool | None = None  # same token ids as device-only for this request
    extra: dict = field(default_factory=dict)

    @property
    def times_s(self) -> list[float]:
        """Display time of each token, from the request start."""
        return [t.time_s for t in self.result.tokens] if self.result else []

    @property
    def token_ids(self) -> list[int]:
        return self.result.token_ids if self.result else []

    @property
    def sources(self) -> list[str]:
        return list(self.result.sources) if self.result else []

    @property
    def num_tokens(self) -> int:
        return len(self.result.tokens) if self.result else 0

    @property
    def ttft_s(self) -> float | None:
        return self.result.ttft_s if self.result else None

    @property
    def e2e_s(self) -> float | None:
        return self.result.e2e_s if self.result else None

    @property
    def itl_s(self) -> list[float]:
        return self.result.itl_s if self.result else []

    @property
    def tpot_s(self) -> float | None:
        """(E2E - TTFT) / (n - 1); None for a one-token answer."""
        return self.result.tpot_mean_s if self.result else None

    @property
    def max_tpot_s(self) -> float | None:
        """The largest gap between two displayed tokens (max TPOT), handoff included."""
        return self.result.max_tpot_s if self.result else None

    @property
    def handoff_index(self) -> int | None:
        return self.result.handoff_index if self.result else None

    @property
    def cloud_tokens(self) -> int:
        return self.result.cloud_tokens if self.result else 0

    @property
    def cloud_busy_s(self) -> float | None:
        return self.result.cloud_busy_s if self.result else None

    @property
    def fallback(self) -> str | None:
        return self.result.fallback if self.result else None

    @property
    def is_ok(self) -> bool:
        return self.error is None and self.num_tokens > 0

    def to_json(self) -> dict:
        r = self.result
        return {
            "index": self.index,
            "mode": self.mode,
            "input_len": self.input_len,
            "output_len": self.output_len,
            "start_s": self.start_s,
            "times_s": self.times_s,
            "token_ids": self.token_ids,
            "sources": self.sources,
            "handoff_index": self.handoff_index,
            "cloud_tokens": self.cloud_tokens,
            "cloud_busy_s": self.cloud_busy_s,
            "cloud_cached_tokens": r.cloud_cached_tokens if r else None,
            "kept_prompt_tokens": r.kept_prompt_tokens if r else None,
            "fallback": self.fallback,
            "end_reason": r.end_reason if r else "",
            "error": self.error,
            "matches_device": self.matches_device,
            "extra": self.extra,
            "num_tokens": self.num_tokens,
            "ttft_ms": _ms(self.ttft_s),
            "tpot_ms": _ms(self.tpot_s),
            "max_tpot_ms": _ms(self.max_tpot_s),
            "e2el_ms": _ms(self.e2e_s),
        }


def record_from_result(
    index: int, label: str, output_len: int, start_s: float, result: GenerationResult
) -> RequestRecord:
    """A record from a ``device_client`` ``GenerationResult``."""
    return RequestRecord(index, label, result.prompt_tokens, output_len, start_s, result)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000.0 * seconds


def percentile(values: list[float], p: float) -> float | None:
    """Linear-interpolated percentile (numpy's default, as vLLM uses); None when empty."""
    return float(np.percentile(values, p)) if values else None


def distribution_ms(name: str, values_s: list[float]) -> dict[str, float | None]:
    """mean/median/std/p90/p99/max of ``values_s`` in ms, keyed ``mean_<name>_ms`` ..."""
    vals = [1000.0 * v for v in values_s]
    out: dict[str, float | None] = {
        f"mean_{name}_ms": float(np.mean(vals)) if vals else None,
        f"median_{name}_ms": percentile(vals, 50),
        f"std_{name}_ms": float(np.std(vals)) if vals else None,
    }
    for p in PERCENTILES[1:]:
        out[f"p{p}_{name}_ms"] = percentile(vals, p)
    out[f"max_{name}_ms"] = max(vals) if vals else None
    return out


def parse_goodput(spec: list[str] | str | None) -> dict[str, float]:
    """``"ttft:2000 tpot:300"`` (or a list of ``key:ms``) to {"ttft": 2000.0, ...}."""
    if not spec:
        return {}
    items = spec.split() if isinstance(spec, str) else [s for part in spec for s in part.split()]
    slos: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or key not in SLO_METRICS:
            raise ValueError(
                f"goodput SLO {item!r}: use KEY:MS with KEY in {', '.join(SLO_METRICS)}"
            )
        try:
            slos[key] = float(value)
        except ValueError:
            raise ValueError(f"goodput SLO {item!r}: {value!r} is not a number of ms") from None
        if slos[key] <= 0:
            raise ValueError(f"goodput SLO {item!r}: must be > 0 ms")
    return slos


def meets_slo(record: RequestRecord, slos_ms: dict[str, float]) -> bool:
    """Every SLO holds (a metric the request lacks, e.g. TPOT of one token, counts as met)."""
    if not record.is_ok:
        return False
    values = {
        "ttft": record.ttft_s,
        "tpot": record.tpot_s,
        "e2el": record.e2e_s,
        "max_tpot": record.max_tpot_s,
    }
    return all(values[k] is None or 1000.0 * values[k] <= ms for k, ms in slos_ms.items())


def busy_duration_s(records: list[RequestRecord]) -> float:
    """Length of the union of the records' [start, start + E2E] intervals: the time the mode had
    a request in flight (its benchmark duration when modes are interleaved)."""
    spans = sorted((r.start_s, r.start_s + (r.e2e_s or 0.0)) for r in records)
    total, end = 0.0, -math.inf
    for lo, hi in spans:
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


def summarize(records: list[RequestRecord], slos_ms: dict[str, float]) -> dict:
    """One mode's summary with vLLM key names where vLLM has them, plus ours."""
    ok = [r for r in records if r.is_ok]
    duration = busy_duration_s(ok)
    out: dict = {
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "duration_s": duration,
        "total_input_tokens": sum(r.input_len for r in ok),
        "total_output_tokens": sum(r.num_tokens for r in ok),
        "request_throughput": len(ok) / duration if duration > 0 else None,
        "output_throughput": sum(r.num_tokens for r in ok) / duration if duration > 0 else None,
    }
    out.update(distribution_ms("ttft", [r.ttft_s for r in ok]))
    out.update(distribution_ms("tpot", [r.tpot_s for r in ok if r.tpot_s is not None]))
    out.update(distribution_ms("itl", [g for r in ok for g in r.itl_s]))
    out.update(distribution_ms("e2el", [r.e2e_s for r in ok]))
    out.update(distribution_ms("max_tpot", [r.max_tpot_s for r in ok if r.max_tpot_s is not None]))
    if slos_ms:
        good = sum(meets_slo(r, slos_ms) for r in ok)
        out["request_goodput"] = good / duration if duration > 0 else None
        out["goodput_fraction"] = good / len(records) if records else None
    out.update(_cloud_cost(ok))
    return out


def _cloud_cost(ok: list[RequestRecord]) -> dict:
    busy = [r.cloud_busy_s for r in ok if r.cloud_busy_s is not None]
    handoffs = [r.handoff_index for r in ok if r.handoff_index is not None]
    total_busy = sum(busy)
    return {
        "mean_output_tokens": float(np.mean([r.num_tokens for r in ok])) if ok else None,
        "mean_cloud_tokens": float(np.mean([r.cloud_tokens for r in ok])) if ok else None,
        "mean_handoff_index": float(np.mean(handoffs)) if handoffs else None,
        "mean_cloud_busy_s": total_busy / len(busy) if busy else None,
        "total_cloud_busy_s": total_busy if busy else None,
        # requests served per second the cloud was busy: the inverse of busy s per request
        "cloud_throughput": len(busy) / total_busy if total_busy > 0 else None,
        "num_fallbacks": sum(r.fallback is not None for r in ok),
        "fallback_reasons": sorted({r.fallback for r in ok if r.fallback}),
        "num_matching_device": sum(bool(r.matches_device) for r in ok),
    }


def cloud_throughput_gain(pd: dict, cloud: dict) -> float | None:
    """pd / cloud-only cloud throughput: how many more requests one cloud serves with pd."""
    a, b = pd.get("cloud_throughput"), cloud.get("cloud_throughput")
    return a / b if a and b else None
