"""Cost models and device/cloud/network profiles (ARCHITECTURE §2): what a profile file holds,
how it is loaded and saved, and how measured times are fitted to it.

Pure (no torch, no I/O beyond JSON load/save of profiles). The formulas built on these costs are
in ``common.timing_model``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
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
    """Cloud decode step time e0 + e1·B for B concurrent requests (one token each), and
    ``lone_s`` for a request decoding alone where that differs from the line: our engine decodes
    a lone request without the padded batch and its attention mask, and measured here a round
    at B = 1 takes 58 ms against 92 ms at B = 2 and 95 ms at B = 4, which no line through all
    of them fits (a line through B = 1..8 put B = 2 at 75 ms and the simulated cloud-only rate
    25% above the live one)."""

    e0: float
    e1: float = 0.0
    rmse_s: float = 0.0
    max_rel_err: float = 0.0
    lone_s: float | None = None  # B = 1, when the fit is over B >= 2

    def step_time(self, concurrency: float) -> float:
        if concurrency <= 1.0 and self.lone_s is not None:
            return self.lone_s
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


def slowed(device: DeviceProfile, factor: float) -> DeviceProfile:
    """The same device taking ``factor`` x its profile's time for every prefill and decode
    step (a phone throttled, busy, or simply not the one the profile was made on)."""
    if factor == 1.0:
        return device
    p, d = device.prefill, device.decode
    return replace(
        device,
        prefill=replace(p, a=p.a * factor, b=p.b * factor, c=p.c * factor),
        decode=replace(d, d0=d.d0 * factor, d1=d.d1 * factor),
    )


def with_speed_error(device: DeviceProfile, error: float | None) -> DeviceProfile:
    """The profile, declared to be up to ``error`` (0.1: 10%) off the device it plans for: the
    tuner pads the device's prefill by its ``max_rel_err`` (``timing_model.safe_budget``), so
    the larger of the fit's own error and ``error`` is kept. ``None``: the profile as it is."""
    if error is None:
        return device
    if not 0 <= error < 1:
        raise ProfileError(f"device error {error:g}: give a fraction in [0, 1), e.g. 0.1")
    prefill = replace(device.prefill, max_rel_err=max(device.prefill.max_rel_err, error))
    return replace(device, prefill=prefill)


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
    data = {"kind": profile.kind, **asdict(profile)}
    for key in _COSTS:  # an optional coefficient left unset is left out of the file
        if isinstance(data.get(key), dict):
            data[key] = {k: v for k, v in data[key].items() if v is not None}
    return data


def save_profile(profile: DeviceProfile | CloudProfile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile_to_dict(profile), indent=2) + "\n")


def _cost(data: dict[str, Any], key: str, where: str) -> Any:
    cls = _COSTS[key]
    raw = data.get(key)
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: missing object {key!r}")
    names = [f for f in cls.__dataclass_fields__ if raw.get(f) is not None]
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


LONE_SPLIT_ERR = 0.1  # a line that misses a round by more than this leaves B = 1 apart


def fit_batch(
    concurrency: list[float], step_times: list[float], split_lone: bool = False
) -> BatchCost:
    """The line e0 + e1·B through the rounds. With ``split_lone`` (an engine whose lone request
    takes another code path, as ours does: ``pdd profile cloud``), a lone request's round is
    kept apart (``lone_s``) when one line through all of them misses a point by more than
    LONE_SPLIT_ERR and at least two batched levels remain to fit the line."""
    (e0, e1), rmse, rel = fit_nonnegative([[1.0, x] for x in concurrency], step_times)
    if not split_lone:
        return BatchCost(e0=e0, e1=e1, rmse_s=rmse, max_rel_err=rel)
    batched = [(b, t) for b, t in zip(concurrency, step_times, strict=True) if b > 1]
    lone = [t for b, t in zip(concurrency, step_times, strict=True) if b <= 1]
    if rel <= LONE_SPLIT_ERR or not lone or len({b for b, _ in batched}) < 2:
        return BatchCost(e0=e0, e1=e1, rmse_s=rmse, max_rel_err=rel)
    xs, ys = [b for b, _ in batched], [t for _, t in batched]
    (e0, e1), rmse, rel = fit_nonnegative([[1.0, x] for x in xs], ys)
    lone_s = sorted(lone)[len(lone) // 2]
    return BatchCost(e0=e0, e1=e1, rmse_s=rmse, max_rel_err=rel, lone_s=lone_s)
