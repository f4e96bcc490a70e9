"""The fleet simulator's core: one workload in one mode, SLO attainment, the largest rate.

Modes: cloud-only (the cloud streams the whole answer), device-only, pd (each device class's
settings: per bucket N, refine ratio, pacing; a bucket the tuner made device-only or cloud-only
is served that way). The cloud is ``sim_cloud``; each pd request's display is ``sim_display``.

The handoff stops the cloud early: a pd request's budget 1 + N is only a cap. Pass 1 runs the
cloud with the caps; each device hands off when its prompt is done (m = tokens received), the
cloud hears it RTT/2 later and stops after the step in flight. Pass 2 reruns the cloud with the
tokens it really decoded, so cloud time and load are what the handoff leaves.

SLO (like with like): a request meets it when its TTFT and its max TPOT are within the SLO; a pd
request routed through the cloud must also have shown the cloud's first token (m >= 1, not the
device's own prefill) and not stalled at the handoff (``is_stall``). Attainment is the share that meets it; the
largest rate is the highest mean request rate whose attainment is at least the SLO percentile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmarks.planner.sim_cloud import CloudRun, simulate_cloud
from benchmarks.planner.sim_display import run_display
from benchmarks.planner.sim_workload import Workload, scaled, tiled
from cloud_server.config import EngineConfig
from common.profiles import CloudProfile, DeviceProfile, NetworkProfile
from common.settings import SplitSettings
from common.timing_model import absorb_time, is_stall, kept_prompt_len, prompt_done_time
from device_client.speed_controller import PacingConfig

MODES = ("cloud-only", "device-only", "pd")


MAX_RATE = 1e5  # req/s; a mode that meets the SLO past it is reported as unbounded
MIN_PROBE_SLOS = 30  # a rate probe lasts at least this many TTFT SLOs
MAX_PROBE_REQUESTS = 200_000


@dataclass(frozen=True)
class Fleet:
    settings: list[SplitSettings]  # one per device profile (or one for all)
    devices: list[DeviceProfile]
    cloud: CloudProfile
    network: NetworkProfile
    slots: int
    slo_ttft_s: float
    slo_tpot_s: float
    percentile: float = 90.0
    prefill_chunk_tokens: int = EngineConfig.prefill_chunk_tokens  # 0: whole prompts first

    def settings_for(self, device: int) -> SplitSettings:
        return self.settings[device if len(self.settings) > 1 else 0]


@dataclass(frozen=True)
class ModeResult:
    ttft: np.ndarray  # per request (the requests whose display was simulated)
    tpot: np.ndarray
    max_tpot_s: np.ndarray
    good: np.ndarray  # meets the SLO, like with like
    cloud_busy_s: float  # per request
    utilisation: float
    stall_rate: float  # of the pd requests that went through the cloud and a handoff
    mean_handoff: float
    share_device_only: float = 0.0  # requests the settings answer on the device alone
    share_cloud_only: float = 0.0  # requests the settings leave to the cloud alone
    cloud_tokens: float = 0.0  # tokens the cloud decoded per request (first included)
    weight: np.ndarray | None = None  # per kept request: how many requests it stands for

    @property
    def attainment(self) -> float:
        """Share of the workload's requests that meet the SLO (a sampled pd display stands for
        all the pd requests it was drawn from)."""
        if not len(self.good):
            return 0.0
        w = np.ones(len(self.good)) if self.weight is None else self.weight
        return float((w * self.good).sum() / w.sum())

    def meets(self, fleet: Fleet) -> bool:
        return self.attainment >= fleet.percentile / 100.0 - 1e-12


def _within(fleet: Fleet, ttft: np.ndarray, max_tpot_s: np.ndarray) -> np.ndarray:
    eps = 1e-6  # the controller stretches gaps to exactly Δmax = the TPOT SLO
    return (ttft <= fleet.slo_ttft_s + eps) & (max_tpot_s <= fleet.slo_tpot_s + eps)


def _device_times(work: Workload, fleet: Fleet) -> tuple[np.ndarray, np.ndarray]:
    """(TTFT, mean τd) of each request on its own device."""
    pairs = [
        (dev.prefill.extend_time(int(L - c), int(c)), dev.decode.mean_time(int(L), int(o)))
        for dev, L, c, o in zip(
            (fleet.devices[d] for d in work.device_idx),
            work.prompt_lens,
            work.device_cached,  # a session's cache: only the rest is prefilled
            work.output_lens,
            strict=True,
        )
    ]
    arr = np.array(pairs, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _run_cloud(work: Workload, num_tokens: np.ndarray, fleet: Fleet) -> CloudRun:
    return simulate_cloud(
        work.arrivals + fleet.network.rtt_s / 2,
        work.prompt_lens,
        num_tokens,
        fleet.cloud,
        fleet.slots,
        fleet.prefill_chunk_tokens,
        num_cached=work.cached_lens,  # prefilled after its cached prefix, attending to it
    )


def _pace(run: CloudRun, num_tokens: np.ndarray) -> np.ndarray:
    """Seconds between two tokens of each request (its decode span over its tokens)."""
    span = np.nan_to_num(run.decode_end_at - run.first_token_at)
    return np.where(num_tokens > 1, span / np.maximum(num_tokens - 1, 1), np.inf)


def simulate_mode(mode: str, work: Workload, fleet: Fleet, sample: int | None = None) -> ModeResult:
    """One mode over the whole workload; ``sample`` limits the pd display loops (rate search)."""
    dev_ttft, dev_tau = _device_times(work, fleet)
    out = work.output_lens
    if mode == "device-only":
        good = _within(fleet, dev_ttft, dev_tau)
        return ModeResult(dev_ttft, dev_tau, dev_tau, good, 0.0, 0.0, 0.0, 0.0, 1.0)
    if mode == "cloud-only":
        run = _run_cloud(work, out, fleet)
        ttft = run.first_token_at + fleet.network.rtt_s / 2 - work.arrivals
        tpot = (run.decode_end_at - run.first_token_at) / np.maximum(out - 1, 1)
        good = _within(fleet, ttft, tpot)
        mean_out = float(np.mean(out))
        busy = float(run.busy_s.mean())
        return ModeResult(ttft, tpot, tpot, good, busy, run.utilisation, 0.0, mean_out, 0.0, 1.0)
    if mode != "pd":
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return _simulate_pd(work, fleet, dev_ttft, dev_tau, sample)


@dataclass(frozen=True)
class _Plan:
    """Per request: its bucket's choices."""

    buckets: list  # the Bucket each request falls in
    use_cloud: np.ndarray
    use_device: np.ndarray
    cap: np.ndarray  # tokens the cloud may send: 1 + N (O for cloud-only), 0 without cloud


def _plan(work: Workload, fleet: Fleet) -> _Plan:
    buckets = [  # by the tokens the device must still prefill (the client's one rule)
        fleet.settings_for(int(d)).bucket_for(int(L), int(c))
        for d, L, c in zip(work.device_idx, work.prompt_lens, work.device_cached, strict=True)
    ]
    use_cloud = np.array([b.use_cloud for b in buckets], bool)
    use_device = np.array([b.use_device for b in buckets], bool)
    budget = np.array([1 + b.cloud_tokens for b in buckets])
    # A budget that covers the whole answer leaves the device nothing to take over: the cloud
    # answers alone (the client shows its tokens and ends), whatever the bucket says.
    use_device &= ~(use_cloud & (budget >= work.output_lens))
    cap = np.where(use_cloud, np.where(use_device, budget, work.output_lens), 0)
    return _Plan(buckets, use_cloud, use_device, cap)


def _prompt_done(work: Workload, fleet: Fleet, plan: _Plan, run: CloudRun) -> np.ndarray:
    """Device-relative time each pd request's prompt prefill ends (the handoff)."""
    done = np.full(len(work.arrivals), np.inf)
    first_dev = run.first_token_at + fleet.network.rtt_s / 2 - work.arrivals
    new, cached = work.device_new_lens, work.device_cached
    for i in np.flatnonzero(plan.use_cloud & plan.use_device):
        dev = fleet.devices[work.device_idx[i]]
        ratio = plan.buckets[i].refine_ratio
        done[i] = prompt_done_time(int(new[i]), ratio, first_dev[i], dev, int(cached[i]))
    return done


def _decoded_by_handoff(work, fleet, run, cap, done) -> np.ndarray:
    """Tokens the cloud has decoded when the handoff reaches it, plus the step in flight."""
    stop_at = work.arrivals + done + fleet.network.rtt_s / 2  # the handoff reaches the cloud
    pace = _pace(run, cap)
    after = np.nan_to_num(stop_at - run.first_token_at, nan=0.0, posinf=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        steps = np.where(np.isfinite(pace), np.floor(np.maximum(after, 0) / pace), 0)
    return np.minimum(cap, 1 + steps + (after > 0)).astype(int)


def _simulate_pd(work: Workload, fleet: Fleet, dev_ttft, dev_tau, sample: int | None) -> ModeResult:
    plan = _plan(work, fleet)
    pd_req = plan.use_cloud & plan.use_device
    first = _run_cloud(work, plan.cap, fleet)  # pass 1: every budget decoded in full
    done = _prompt_done(work, fleet, plan, first)
    tokens = np.where(pd_req, _decoded_by_handoff(work, fleet, first, plan.cap, done), plan.cap)
    run = _run_cloud(work, tokens, fleet)  # pass 2: the cloud stops at the handoff
    pace = _pace(run, tokens)
    cloud_ttft = run.first_token_at + fleet.network.rtt_s / 2 - work.arrivals
    ttft, tpot, max_tpot_s = dev_ttft.copy(), dev_tau.copy(), dev_tau.copy()
    co = plan.use_cloud & ~plan.use_device
    ttft[co] = cloud_ttft[co]
    tpot[co] = max_tpot_s[co] = np.where(np.isfinite(pace[co]), pace[co], 0.0)
    good = _within(fleet, ttft, max_tpot_s)
    rng = np.random.default_rng(1)
    idx = np.flatnonzero(pd_req)
    if sample is not None and len(idx) > sample:
        idx = np.sort(rng.choice(idx, sample, replace=False))
    keep = ~pd_req
    keep[idx] = True
    weight = np.ones(len(work.arrivals))
    weight[idx] = pd_req.sum() / max(len(idx), 1)  # each sampled display stands for the rest
    stalls = handoffs = 0
    for i in idx:
        res, tail = _display_one(i, work, fleet, plan.buckets[i], run, pace[i], rng)
        out = int(work.output_lens[i])
        e2e = res.own_shown_at + max(out - res.handoff_index - 1, 0) * dev_tau[i]
        ttft[i] = res.first_shown_at
        tpot[i] = (e2e - res.first_shown_at) / max(out - 1, 1)
        max_tpot_s[i] = max(res.max_tpot_s, tail)
        stall = is_stall(res.handoff_gap_s, plan.buckets[i].max_interval_s)
        good[i] = res.handoff_index >= 1 and not stall and _within(fleet, ttft[i], max_tpot_s[i])
        stalls += stall
        handoffs += res.handoff_index
    n = len(work.arrivals)
    return ModeResult(
        ttft[keep],
        tpot[keep],
        max_tpot_s[keep],
        good[keep],
        float(run.busy_s.mean()),
        run.utilisation,
        stalls / max(len(idx), 1),
        handoffs / max(len(idx), 1),
        share_device_only=float((~plan.use_cloud).sum() / n),
        share_cloud_only=float(co.sum() / n),
        cloud_tokens=float(tokens.mean()),
        weight=weight[keep],
    )


def _display_one(i: int, work: Workload, fleet: Fleet, bucket, run: CloudRun, pace, rng):
    dev = fleet.devices[work.device_idx[i]]
    L, out = int(work.device_new_lens[i]), int(work.output_lens[i])  # the part still to prefill
    cached = int(work.device_cached[i])  # what the device's session cache already holds
    kept = kept_prompt_len(L, bucket.refine_ratio)
    cap = min(1 + bucket.cloud_tokens, out)
    arrivals = _token_arrivals(run.first_token_at[i], pace, cap, work.arrivals[i], fleet, rng)
    prompt_s = prompt_done_time(L, bucket.refine_ratio, arrivals[0], dev, cached)
    pacing = PacingConfig(
        bucket.min_interval_s, bucket.max_interval_s, dev.decode.time(cached + L), kept / prompt_s
    )
    res = run_display(
        pacing, arrivals, kept, prompt_s, lambda k: absorb_time(k, cached + kept, dev)
    )
    tail = dev.decode.time(cached + L + out) if res.handoff_index < out else 0.0
    return res, tail


def _token_arrivals(first: float, pace: float, num: int, start: float, fleet: Fleet, rng):
    """Device-relative arrival of each cloud token: the first at TTFT, then one per ``pace``
    (the cloud's pass-2 rate, carried on up to the cap), + RTT/2 and uniform jitter."""
    step = pace if math.isfinite(pace) else 0.0
    times = first + step * np.arange(num) + fleet.network.rtt_s / 2 - start
    if fleet.network.jitter_s > 0:
        times = np.maximum.accumulate(times + rng.uniform(0, fleet.network.jitter_s, num))
    return times.tolist()


def probe(work: Workload, rate: float, fleet: Fleet) -> Workload:
    """``work`` at ``rate``, repeated until it lasts MIN_PROBE_SLOS x the TTFT SLO (at most
    MAX_PROBE_REQUESTS): a short burst at a high rate would otherwise drain inside the SLO and
    pass for a sustained rate."""
    need = min(MAX_PROBE_REQUESTS, math.ceil(rate * MIN_PROBE_SLOS * fleet.slo_ttft_s))
    return scaled(tiled(work, need), rate)


def max_rate(
    mode: str, work: Workload, fleet: Fleet, sample: int, tol: float = 0.03, start: float = 0.05
) -> float:
    """The largest mean request rate whose SLO attainment holds (doubling from ``start``, then
    bisection). 0 when it fails even at the lowest rate probed; ``math.inf`` past ``MAX_RATE``."""
    if mode == "device-only":
        return math.inf

    def meets(rate: float) -> bool:
        return simulate_mode(mode, probe(work, rate, fleet), fleet, sample).meets(fleet)

    lo, hi = 0.0, start
    while meets(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_RATE:
            return math.inf
    floor = 1e-4
    while hi - lo > tol * hi and hi > floor:
        mid = (lo + hi) / 2
        if meets(mid):
            lo = mid
        else:
            hi = mid
    return lo
