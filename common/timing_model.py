"""The timing model of ARCHITECTURE §2: cost models, profiles and the formulas built on them.

Pure (no torch, no I/O beyond JSON load/save of profiles): the tuner, the fleet simulator and the
device client share these functions, so a prediction and a live run speak the same names.

Symbols: L prompt length, O answer length, N cloud tokens after the first, ρ refine ratio,
Tpc/Tpd prefill time on cloud/device, τc/τd decode time per token, m handoff index.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class ProfileError(ValueError):
    """A profile file is missing, unreadable or lacks a field; the message says which."""


# ---------------------------------------------------------------- cost models


@dataclass(frozen=True)
class PrefillCost:
    """Prefill time a + b·L + c·L² seconds for L tokens (c: attention's quadratic term)."""

    a: float
    b: float
    c: float = 0.0
    rmse_s: float = 0.0  # fit error against the measured medians
    max_rel_err: float = 0.0

    def time(self, num_tokens: float) -> float:
        if num_tokens <= 0:
            return 0.0
        return self.a + self.b * num_tokens + self.c * num_tokens * num_tokens

    def extend_time(self, num_tokens: float, context: float) -> float:
        """One more forward of ``num_tokens`` after ``context`` cached tokens (absorb)."""
        if num_tokens <= 0:
            return 0.0
        quad = (context + num_tokens) ** 2 - context**2
        return self.a + self.b * num_tokens + self.c * quad


@dataclass(frozen=True)
class DecodeCost:
    """Decode time per token d0 + d1·context seconds (batch 1)."""

    d0: float
    d1: float = 0.0
    rmse_s: float = 0.0
    max_rel_err: float = 0.0

    def time(self, context: float) -> float:
        return self.d0 + self.d1 * context

    def mean_time(self, context_start: float, num_tokens: int) -> float:
        """Average per-token time while decoding ``num_tokens`` from ``context_start``."""
        return self.time(context_start + max(num_tokens - 1, 0) / 2)


@dataclass(frozen=True)
class BatchCost:
    """Cloud decode step time e0 + e1·B for B concurrent requests (one token each)."""

    e0: float
    e1: float = 0.0
    rmse_s: float = 0.0
    max_rel_err: float = 0.0

    def step_time(self, concurrency: float) -> float:
        return self.e0 + self.e1 * max(concurrency, 1.0)

    def share_per_token(self, concurrency: float) -> float:
        """Busy seconds one request costs per decoded token at this concurrency."""
        b = max(concurrency, 1.0)
        return self.step_time(b) / b


# ---------------------------------------------------------------- profiles


@dataclass(frozen=True)
class DeviceProfile:
    prefill: PrefillCost
    decode: DecodeCost
    meta: dict[str, Any] = field(default_factory=dict)  # machine, model, torch, threads, slowdown
    measurements: dict[str, Any] = field(default_factory=dict)

    kind = "device"

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "device"))


@dataclass(frozen=True)
class CloudProfile:
    prefill: PrefillCost
    decode: DecodeCost
    batch: BatchCost
    meta: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)

    kind = "cloud"

    def tau(self, context: float, concurrency: float = 1.0) -> float:
        """τc: seconds between two tokens of one request at this context and concurrency."""
        scale = self.batch.step_time(concurrency) / self.batch.step_time(1.0)
        return self.decode.time(context) * scale


@dataclass(frozen=True)
class NetworkProfile:
    rtt_s: float = 0.05
    jitter_s: float = 0.0  # extra one-way delay, uniform in [0, jitter_s]

    def __post_init__(self) -> None:
        if self.rtt_s < 0 or self.jitter_s < 0:
            raise ProfileError("network: rtt and jitter must be >= 0")


_COSTS = {"prefill": PrefillCost, "decode": DecodeCost, "batch": BatchCost}


def profile_to_dict(profile: DeviceProfile | CloudProfile) -> dict[str, Any]:
    return {"kind": profile.kind, **asdict(profile)}


def save_profile(profile: DeviceProfile | CloudProfile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile_to_dict(profile), indent=2) + "\n")


def _cost(data: dict[str, Any], key: str, where: str) -> Any:
    cls = _COSTS[key]
    raw = data.get(key)
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: missing object {key!r}")
    names = [f for f in cls.__dataclass_fields__ if f in raw]
    try:
        values = {n: float(raw[n]) for n in names}
        cost = cls(**values)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: bad {key!r} ({exc})") from None
    if any(not math.isfinite(v) or v < 0 for v in values.values()):
        raise ProfileError(f"{where}: {key!r} coefficients must be finite and >= 0")
    return cost


def profile_from_dict(data: Any, kind: str, where: str = "profile") -> DeviceProfile | CloudProfile:
    """Validate a parsed profile; ``kind`` is "device" or "cloud"."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a JSON object")
    if data.get("kind") != kind:
        raise ProfileError(f"{where}: expected a {kind} profile, got kind={data.get('kind')!r}")
    common = {
        "prefill": _cost(data, "prefill", where),
        "decode": _cost(data, "decode", where),
        "meta": dict(data.get("meta") or {}),
        "measurements": dict(data.get("measurements") or {}),
    }
    if common["prefill"].time(1) <= 0 or common["decode"].time(0) <= 0:
        raise ProfileError(f"{where}: prefill and decode times must be > 0")
    if kind == "cloud":
        return CloudProfile(batch=_cost(data, "batch", where), **common)
    return DeviceProfile(**common)


def load_profile(path: str | Path, kind: str) -> DeviceProfile | CloudProfile:
    where = f"{kind} profile {path}"
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ProfileError(f"{where}: file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{where}: not readable JSON ({exc})") from None
    return profile_from_dict(data, kind, where)


# ---------------------------------------------------------------- §2 formulas


def kept_prompt_len(prompt_len: int, refine_ratio: float) -> int:
    """Prompt tokens kept after refinement: L - floor(ρL), at least 1 (= ceil((1-ρ)L), without
    its float error: (1 - 0.3)·10 is 7.000000000000001). The cloud's keep-set aims at it."""
    return max(1, prompt_len - math.floor(refine_ratio * prompt_len + 1e-9))


# A stall: a gap between two displayed tokens longer than STALL_FACTOR x the pacing cap Δmax.
# The speed controller never holds a buffered token past Δmax, so a gap that long means the
# stream ran dry (at the handoff, or a cloud too slow); the factor absorbs timer and scheduling
# noise of a live run. One definition for the live benchmark checks and the fleet simulator.
STALL_FACTOR = 1.5


def is_stall(gap_s: float | None, max_interval_s: float) -> bool:
    """Whether a displayed gap (an answer's max TPOT, or its handoff gap) is a stall."""
    return gap_s is not None and gap_s > STALL_FACTOR * max_interval_s


def ttft_device_only(prompt_len: int, device: DeviceProfile) -> float:
    return device.prefill.time(prompt_len)


def ttft_pd(
    prompt_len: int, cloud: CloudProfile, network: NetworkProfile, queue_s: float = 0.0
) -> float:
    """TTFT(pd) = RTT + cloud queueing + Tpc(L)."""
    return network.rtt_s + queue_s + cloud.prefill.time(prompt_len)


def absorb_time(num_shown: int, context: int, device: DeviceProfile) -> float:
    """absorb(m): the device's forward over the m shown cloud tokens after its prompt."""
    return device.prefill.extend_time(num_shown, context)


def catch_up_time(
    prompt_len: int,
    refine_ratio: float,
    num_absorbed: int,
    device: DeviceProfile,
    keep_set_at_s: float = 0.0,
) -> float:
    """Tcatch = Tpd((1-ρ)L) + absorb(m), from request start: when the device's first own token
    is ready. With ρ > 0 the keep-set arrives at ``keep_set_at_s`` (with the first token)."""
    kept = kept_prompt_len(prompt_len, refine_ratio)
    done = prompt_done_time(prompt_len, refine_ratio, keep_set_at_s, device)
    return done + absorb_time(num_absorbed, kept, device)


def display_interval(
    ttft_s: float, catch_up_s: float, tau_d: float, num_cloud_tokens: int, lo: float, hi: float
) -> float:
    """Δ the speed controller settles on: the stream stretched to the device's own first token."""
    raw = (catch_up_s + tau_d - ttft_s) / max(num_cloud_tokens, 1)
    return min(max(raw, lo), hi)


def min_safe_budget(
    ttft_s: float, catch_up_s: float, tau_d: float, max_interval_s: float, margin: int = 0
) -> int:
    """Smallest safe N: ceil((Tcatch + τd - TTFT)/Δmax) + margin (0 if the device is first)."""
    gap = catch_up_s + tau_d - ttft_s
    if gap <= 0:
        return 0
    return math.ceil(gap / max_interval_s) + margin


# The one pacing rule (the tuner, and the client for untuned settings): N is sized for cloud
# tokens shown PLAN_FACTOR x τd apart, while the speed controller may stretch them to
# STRETCH_FACTOR x τd (issue 3's max-gap target) when the device runs late. Measured: a device
# prefilling beside the cloud ran ~6% slower than its profile taken alone, and with
# Δmin = Δmax = τd there was no headroom: a 0.6-0.9 s stall at every 1-2k-token handoff.
PLAN_FACTOR = 1.2
STRETCH_FACTOR = 1.5
PREFILL_SAFETY_MIN = 0.05  # at least +5% on the device prefill estimate


@dataclass(frozen=True)
class Pacing:
    """The speed controller's bounds for one device: Δmin its own rhythm τd, N sized at Δplan,
    Δmax the cap."""

    tau_d: float
    min_interval_s: float
    plan_interval_s: float
    max_interval_s: float


def pacing_for(tau_d: float, jitter_s: float = 0.0, tpot_slo_s: float | None = None) -> Pacing:
    """Δmin = τd, Δplan = PLAN_FACTOR·τd + jitter, Δmax = STRETCH_FACTOR·τd + jitter; a TPOT
    SLO is Δmax instead, and N is then sized for the gaps it allows (Δplan at least
    PLAN_FACTOR/STRETCH_FACTOR of it); Δmin and Δplan never above Δmax."""
    hi = tpot_slo_s if tpot_slo_s is not None else STRETCH_FACTOR * tau_d + jitter_s
    plan = PLAN_FACTOR * tau_d + jitter_s
    if tpot_slo_s is not None:  # the SLO allows wider gaps: size N for them, same headroom
        plan = max(plan, hi * PLAN_FACTOR / STRETCH_FACTOR)
    return Pacing(tau_d, min(tau_d, hi), min(plan, hi), hi)


def safe_budget(
    prompt_len: int,
    refine_ratio: float,
    ttft_s: float,
    tau_d: float,
    plan_interval_s: float,
    device: DeviceProfile,
    jitter_s: float = 0.0,
    keep_set_at_s: float | None = None,
    max_budget: int | None = None,
) -> tuple[int, int]:
    """(N, margin tokens): the least no-stall budget, Tcatch with all N + 1 tokens absorbed
    (a fixed point: absorb(N + 1) grows with N). The prefill estimate gets the profile's own
    error as safety (at least PREFILL_SAFETY_MIN); the margin covers the network jitter.
    ``max_budget`` caps N (the answer length)."""
    safety = 1.0 + max(PREFILL_SAFETY_MIN, device.prefill.max_rel_err)
    margin = math.ceil(jitter_s / plan_interval_s) + 1 if plan_interval_s > 0 else 1
    keep_at = ttft_s if keep_set_at_s is None else keep_set_at_s
    n = 0
    for _ in range(50):
        catch = safety * catch_up_time(prompt_len, refine_ratio, n + 1, device, keep_at)
        nxt = min_safe_budget(ttft_s, catch, tau_d, plan_interval_s, margin)
        if nxt <= n:
            break
        n = nxt if max_budget is None else min(nxt, max_budget)
        if max_budget is not None and n >= max_budget:
            break  # past it the device never takes over (and the fixed point may diverge)
    return n, margin


def prompt_done_time(
    prompt_len: int,
    refine_ratio: float,
    keep_set_at_s: float,
    device: DeviceProfile,
    context: int = 0,
) -> float:
    """When the device's prompt prefill ends: full speed until the keep-set arrives (with the
    first cloud token), then only the kept share of the positions not prefilled yet.
    ``prompt_len``: the tokens to prefill, after ``context`` a session's cache already holds."""
    full = device.prefill.extend_time(prompt_len, context)
    if refine_ratio <= 0 or keep_set_at_s >= full:
        return full
    done = prompt_len * max(keep_set_at_s, 0.0) / full
    left = math.ceil((1.0 - refine_ratio) * (prompt_len - done))
    return max(keep_set_at_s, 0.0) + left * full / prompt_len


def handoff_index(
    ttft_s: float, prompt_done_s: float, token_interval_s: float, num_cloud_tokens: int
) -> int:
    """m: cloud tokens received when the device's prompt prefill ends (it hands off then).

    The first arrives at TTFT, the next every ``token_interval_s`` (cloud τc), at most 1 + N.
    """
    if prompt_done_s < ttft_s:
        return 0
    return min(num_cloud_tokens, 1 + math.floor((prompt_done_s - ttft_s) / token_interval_s))


def cloud_busy_s(
    prompt_len: int, num_tokens: int, cloud: CloudProfile, concurrency: float = 1.0
) -> float:
    """Cloud occupancy per request: Tpc(L) + n·τc share (n = 1 + N for pd, O for cloud-only)."""
    share = cloud.batch.share_per_token(concurrency) / cloud.batch.step_time(1.0)
    return cloud.prefill.time(prompt_len) + num_tokens * cloud.decode.time(prompt_len) * share


def cloud_gain(prompt_len: int, cloud_tokens: int, output_len: int, cloud: CloudProfile) -> float:
    """Cloud throughput gain of pd over cloud-only ≈ busy(cloud-only) / busy(pd)."""
    pd = cloud_busy_s(prompt_len, 1 + cloud_tokens, cloud)
    return cloud_busy_s(prompt_len, output_len, cloud) / pd


# ---------------------------------------------------------------- fitting


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float] | None:
    """Gaussian elimination for the small normal equations; None if singular."""
    n = len(rhs)
    m = [row[:] + [r] for row, r in zip(matrix, rhs, strict=False)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-300:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[col], strict=False)]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit_nonnegative(
    features: list[list[float]], ys: list[float]
) -> tuple[list[float], float, float]:
    """Least squares on relative error with every coefficient >= 0.

    Tries each subset of features (at most 3 here) and keeps the best non-negative solution.
    Returns (coefficients, rmse in y units, max relative error).
    """
    if len(features) != len(ys) or not ys:
        raise ValueError("need one feature row per measurement")
    if any(y <= 0 for y in ys):
        raise ValueError("measured times must be > 0")
    k = len(features[0])
    best: tuple[float, list[float]] | None = None
    for mask in range(1, 1 << k):
        cols = [j for j in range(k) if mask >> j & 1]
        if len(cols) > len(ys):
            continue
        rows = [[x[j] / y for j in cols] for x, y in zip(features, ys, strict=False)]  # weight 1/y
        ata = [[sum(r[i] * r[j] for r in rows) for j in range(len(cols))] for i in range(len(cols))]
        atb = [sum(r[i] for r in rows) for i in range(len(cols))]
        sol = _solve(ata, atb)
        if sol is None or any(s < 0 for s in sol):
            continue
        coefs = [0.0] * k
        for j, s in zip(cols, sol, strict=False):
            coefs[j] = s
        rel = [
            (sum(c * xi for c, xi in zip(coefs, x, strict=False)) - y) / y
            for x, y in zip(features, ys, strict=False)
        ]
        score = sum(e * e for e in rel)
        if best is None or score < best[0] - 1e-15:
            best = (score, coefs)
    assert best is not None, "the single-feature fits always give a non-negative solution"
    coefs = best[1]
    preds = [sum(c * xi for c, xi in zip(coefs, x, strict=False)) for x in features]
    rmse = math.sqrt(sum((p - y) ** 2 for p, y in zip(preds, ys, strict=False)) / len(ys))
    max_rel = max(abs(p - y) / y for p, y in zip(preds, ys, strict=False))
    return coefs, rmse, max_rel


def fit_prefill(lengths: list[float], times: list[float]) -> PrefillCost:
    (a, b, c), rmse, rel = fit_nonnegative([[1.0, x, x * x] for x in lengths], times)
    return PrefillCost(a=a, b=b, c=c, rmse_s=rmse, max_rel_err=rel)


def fit_decode(contexts: list[float], times: list[float]) -> DecodeCost:
    (d0, d1), rmse, rel = fit_nonnegative([[1.0, x] for x in contexts], times)
    return DecodeCost(d0=d0, d1=d1, rmse_s=rmse, max_rel_err=rel)


def fit_batch(concurrency: list[float], step_times: list[float]) -> BatchCost:
    (e0, e1), rmse, rel = fit_nonnegative([[1.0, x] for x in concurrency], step_times)
    return BatchCost(e0=e0, e1=e1, rmse_s=rmse, max_rel_err=rel)
