"""The fleet simulator's core: one workload in one mode, SLO attainment, the largest rate.

Modes: cloud-only (the cloud streams the whole answer), device-only, pd (each device class's
settings: per bucket N, refine ratio, pacing; a bucket the tuner made device-only or cloud-only
is served that way). The cloud is ``sim_cloud``; the devices (their speed, each pd request's
display) are ``sim_devices``.

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
from dataclasses import dataclass, replace

import numpy as np

from benchmarks.planner.sim_cloud import CloudRun, StopAt, simulate_cloud
from benchmarks.planner.sim_devices import device_times, display_one, running_devices
from benchmarks.planner.sim_workload import Workload, scaled, tiled
from cloud_server.config import EngineConfig
from common.profiles import CloudProfile, DeviceProfile, NetworkProfile
from common.settings import SplitSettings
from common.timing_model import is_stall, prompt_done_time

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
    # Each request's device takes f x its profile's time, f lognormal with median 1 and this
    # sigma (``speed_factors``); the settings and the pacing prior still read the profile.
    device_speed_sigma: float = 0.0

    def settings_for(self, device: int) -> SplitSettings:
        return self.settings[device if len(self.settings) > 1 else 0]


@dataclass(frozen=True)
class ModeResult:
    ttft: np.ndarray  # per request (the requests whose display was simulated)
    tpot: np.ndarray
    max_tpot_s: np.ndarray
    good: np.ndarray  # meets the SLO, like with like
    cloud_busy_s: float  # engine share per request: the engine seconds it costs (sim_cloud)
    utilisation: float
    stall_rate: float  # of the pd requests that went through the cloud and a handoff
    mean_handoff: float
    share_device_only: float = 0.0  # requests the settings answer on the device alone
    share_cloud_only: float = 0.0  # requests the settings leave to the cloud alone
    cloud_tokens: float = 0.0  # tokens the cloud decoded per request (first included)
    weight: np.ndarray | None = None  # per kept request: how many requests it stands for
    # Slot-holding seconds per request (admission to release; the engine's usage.busy_s, the
    # README's "cloud busy"): the engine share plus the rounds shared and others' prefills.
    cloud_slot_s: float = 0.0
    sustained_rate: float = 0.0  # requests / (first sent .. last End at its device)

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


def _run_cloud(
    work: Workload,
    num_tokens: np.ndarray,
    fleet: Fleet,
    stop_at: StopAt | None = None,
    devices: int | None = None,
    scores: np.ndarray | None = None,
) -> tuple[CloudRun, Workload]:
    """The cloud over ``work``; ``devices``: closed loop (``closed_loop``), whose arrivals the
    run decides, so the workload comes back with them. ``scores[i]``: request i refines its
    prompt, so its scored last W positions are prefilled even when cached."""
    half = fleet.network.rtt_s / 2
    arrivals, hook, dev_at = work.arrivals + half, None, None
    if devices is not None:
        arrivals, hook, dev_at = closed_loop(num_tokens, devices, fleet.network.rtt_s)
    run = simulate_cloud(
        arrivals,
        work.prompt_lens,
        num_tokens,
        fleet.cloud,
        fleet.slots,
        fleet.prefill_chunk_tokens,
        num_cached=work.cached_lens,  # prefilled after its cached prefix, attending to it
        scores_prompt=scores,
        stop_at=stop_at,
        next_arrival=hook,
    )
    if dev_at is not None:
        sent = np.where(num_tokens > 0, run.arrival_at - half, dev_at)
        work = replace(work, arrivals=sent)
    return run, work


def closed_loop(num_tokens: np.ndarray, devices: int, rtt_s: float):
    """``pdd bench --virtual-devices``: ``devices`` devices take the requests in order, each
    sending its next one when the End of its last reaches it (cloud end + RTT/2); a request the
    settings answer on the device alone holds no device. Returns (cloud arrivals: inf until
    released, the ``next_arrival`` hook, device send times of the device-only requests)."""
    n = len(num_tokens)
    arrivals, dev_at = np.full(n, np.inf), np.full(n, np.nan)
    queue = iter(range(n))

    def take(sent: float) -> list[tuple[int, float]]:
        for j in queue:
            if num_tokens[j] > 0:
                return [(j, sent + rtt_s / 2)]
            dev_at[j] = sent
        return []

    for _ in range(devices):
        for j, at in take(0.0):
            arrivals[j] = at
    return arrivals, (lambda _i, t: take(t + rtt_s / 2)), dev_at


def _pace(run: CloudRun) -> np.ndarray:
    """Mean seconds between two tokens of each request (its decode span over its tokens)."""
    span = np.nan_to_num(run.decode_end_at - run.first_token_at)
    return np.where(run.tokens > 1, span / np.maximum(run.tokens - 1, 1), np.inf)


def _sustained(run: CloudRun, work: Workload, fleet: Fleet) -> float:
    """Requests over the span from the first one sent to the last End reaching its device, as
    ``pdd bench --virtual-devices`` computes ``sustained_request_rate``."""
    ended = np.isfinite(run.decode_end_at)
    if not ended.any():
        return 0.0
    span = run.decode_end_at[ended].max() + fleet.network.rtt_s / 2 - work.arrivals.min()
    return float(ended.sum() / span) if span > 0 else 0.0


def simulate_mode(
    mode: str,
    work: Workload,
    fleet: Fleet,
    sample: int | None = None,
    closed_loop_devices: int | None = None,
) -> ModeResult:
    """One mode over the whole workload; ``sample`` limits the pd display loops (rate search).
    ``closed_loop_devices``: M devices send the requests one after the other (``closed_loop``);
    the workload's arrival times are then ignored."""
    dev_ttft, dev_tau = device_times(work, fleet.devices, fleet.device_speed_sigma)
    out = work.output_lens
    if mode == "device-only":
        good = _within(fleet, dev_ttft, dev_tau)
        return ModeResult(dev_ttft, dev_tau, dev_tau, good, 0.0, 0.0, 0.0, 0.0, 1.0)
    if mode == "cloud-only":
        run, work = _run_cloud(work, out, fleet, devices=closed_loop_devices)
        ttft = run.first_token_at + fleet.network.rtt_s / 2 - work.arrivals
        tpot = (run.decode_end_at - run.first_token_at) / np.maximum(out - 1, 1)
        good = _within(fleet, ttft, run.max_gap_s)
        mean_out = float(np.mean(out))
        busy = float(run.busy_s.mean())
        return ModeResult(
            ttft, tpot, run.max_gap_s, good, busy, run.utilisation, 0.0, mean_out, 0.0, 1.0,
            cloud_tokens=float(run.tokens.mean()), cloud_slot_s=float(run.slot_s.mean()),
            sustained_rate=_sustained(run, work, fleet),
        )  # fmt: skip
    if mode != "pd":
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return _simulate_pd(work, fleet, dev_ttft, dev_tau, sample, closed_loop_devices)


@dataclass(frozen=True)
class _Plan:
    """Per request: its bucket's choices."""

    buckets: list  # the Bucket each request falls in
    use_cloud: np.ndarray
    use_device: np.ndarray
    cap: np.ndarray  # tokens the cloud may send: 1 + N (O for cloud-only), 0 without cloud
    scores: np.ndarray  # the cloud scores its prompt (refinement): its last W always prefilled


def _plan(work: Workload, fleet: Fleet) -> _Plan:
    buckets = [  # by the device's prefill work still to do (the client's one rule)
        fleet.settings_for(int(d)).bucket_for(int(L), int(c), fleet.devices[int(d)].prefill)
        for d, L, c in zip(work.device_idx, work.prompt_lens, work.device_cached, strict=True)
    ]
    use_cloud = np.array([b.use_cloud for b in buckets], bool)
    use_device = np.array([b.use_device for b in buckets], bool)
    budget = np.array([1 + b.cloud_tokens for b in buckets])
    # A budget that covers the whole answer is simulated as the cloud answering alone. The
    # client still races its device there (it may hand off before the cloud's last token), so
    # this is the simulator's upper bound on such a request's cloud cost.
    use_device &= ~(use_cloud & (budget >= work.output_lens))
    cap = np.where(use_cloud, np.where(use_device, budget, work.output_lens), 0)
    scores = use_cloud & use_device & np.array([b.refine_ratio > 0 for b in buckets], bool)
    return _Plan(buckets, use_cloud, use_device, cap, scores)


def _handoff_hook(work: Workload, fleet: Fleet, plan: _Plan) -> StopAt:
    """When each pd request's handoff reaches the cloud: its device's prompt prefill ends
    (with refinement, after the keep-set arrived with the first token), + RTT/2."""
    half = fleet.network.rtt_s / 2
    running = running_devices(work, fleet.devices, fleet.device_speed_sigma)
    pd_req = plan.use_cloud & plan.use_device
    new, cached = work.device_new_lens, work.device_cached

    def stop_at(i: int, arrived: float, first: float) -> float:
        if not pd_req[i]:
            return math.inf
        dev, sent = running(i), arrived - half
        ratio = plan.buckets[i].refine_ratio
        done = prompt_done_time(int(new[i]), ratio, first + half - sent, dev, int(cached[i]))
        return sent + done + half

    return stop_at


def _simulate_pd(work, fleet, dev_ttft, dev_tau, sample, devices) -> ModeResult:
    plan = _plan(work, fleet)
    pd_req = plan.use_cloud & plan.use_device
    # One pass: the cloud stops each pd request after the step in flight when its handoff
    # reaches it, as the engine does; the budget 1 + N is only a cap.
    hook = _handoff_hook(work, fleet, plan)
    run, work = _run_cloud(work, plan.cap, fleet, hook, devices, plan.scores)
    pace = _pace(run)
    cloud_ttft = run.first_token_at + fleet.network.rtt_s / 2 - work.arrivals
    ttft, tpot, max_tpot_s = dev_ttft.copy(), dev_tau.copy(), dev_tau.copy()
    co = plan.use_cloud & ~plan.use_device
    ttft[co] = cloud_ttft[co]
    tpot[co] = np.where(np.isfinite(pace[co]), pace[co], 0.0)
    max_tpot_s[co] = run.max_gap_s[co]  # its largest gap, others' prefill pauses included
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
    running = running_devices(work, fleet.devices, fleet.device_speed_sigma)
    for i in idx:
        profile = fleet.devices[work.device_idx[i]]
        res, tail = display_one(
            i, work, plan.buckets[i], run, pace[i], fleet.network, rng, profile, running(i)
        )
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
        cloud_tokens=float(run.tokens.mean()),
        weight=weight[keep],
        cloud_slot_s=float(run.slot_s.mean()),
        sustained_rate=_sustained(run, work, fleet),
    )


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
