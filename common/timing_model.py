"""The timing model of ARCHITECTURE §2: the formulas built on the cost models
and profiles of ``common.profiles``.

Pure (no torch, no I/O beyond JSON load/save of profiles): the tuner, the fleet simulator and the
device client share these functions, so a prediction and a live run speak the same names.

Symbols: L prompt length, O answer length, N cloud tokens after the first, ρ refine ratio,
Tpc/Tpd prefill time on cloud/device, τc/τd decode time per token, m handoff index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .profiles import CloudProfile, DeviceProfile, NetworkProfile


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
    """Δmin = τd, Δmax = STRETCH_FACTOR·τd + jitter or the TPOT SLO, Δplan = Δmax less the
    stretch room (STRETCH_FACTOR - PLAN_FACTOR)·τd, at least PLAN_FACTOR·τd + jitter (without
    an SLO that is exactly PLAN_FACTOR·τd + jitter); Δmin and Δplan never above Δmax.

    The stretch room is the device's rhythm, not a share of the SLO: the device's prefill
    error is the safety factor's job (``safe_budget``), the jitter the margin tokens'. Sizing N
    at 0.8 x a 100 ms SLO, as before, kept 25% of a gap five times a 1B phone's τd in reserve
    (fleet study: tuned N = 34 where N = 24 never stalled and N = 32 cost 5% less)."""
    hi = tpot_slo_s if tpot_slo_s is not None else STRETCH_FACTOR * tau_d + jitter_s
    plan = max(PLAN_FACTOR * tau_d + jitter_s, hi - (STRETCH_FACTOR - PLAN_FACTOR) * tau_d)
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
    first cloud token), then the kept positions not prefilled yet. The cloud keeps L - floor(ρL)
    positions of the whole prompt, ranked by attention, which favours the recent end (the
    question): so the kept positions are counted as all falling in the part not prefilled yet,
    at most all of it. (Counting only the kept share (1 - ρ) of that part, as before, put a
    512-token prompt's kept length at 62% where the device prefilled 78-80%, and the tuned N ran
    out 0.6-0.9 s before the device's own token.)
    ``prompt_len``: the tokens to prefill, after ``context`` a session's cache already holds."""
    full = device.prefill.extend_time(prompt_len, context)
    if refine_ratio <= 0 or keep_set_at_s >= full:
        return full
    done = prompt_len * max(keep_set_at_s, 0.0) / full
    left = min(prompt_len - done, kept_prompt_len(prompt_len, refine_ratio))
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
