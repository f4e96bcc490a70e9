"""``pdd simulate``: a fleet of heterogeneous devices against one cloud with K slots.

Modes: cloud-only (the cloud streams the whole answer), device-only, pd (the tuned settings:
per bucket N, refine ratio, pacing). The cloud is simulated once per mode (benchmarks.planner.sim_cloud);
each pd request's display then runs the product SpeedController in simulated time
(benchmarks.planner.sim_display). The largest request rate each mode sustains under the SLO is found by
doubling then bisecting the Poisson rate; its pd / cloud-only ratio is the cloud throughput gain.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from benchmarks.bench.workloads import load_trace
from benchmarks.planner.sim_cloud import simulate_cloud
from benchmarks.planner.sim_display import run_display
from benchmarks.planner.tuning_inputs import parse_slo
from cloud_server.config import EngineConfig
from common.settings import SplitSettings
from common.timing_model import (
    CloudProfile,
    DeviceProfile,
    NetworkProfile,
    ProfileError,
    absorb_time,
    kept_prompt_len,
    load_profile,
    prompt_done_time,
)
from device_client.speed_controller import PacingConfig

MODES = ("cloud-only", "device-only", "pd")


@dataclass(frozen=True)
class Workload:
    arrivals: np.ndarray  # seconds, at the device
    prompt_lens: np.ndarray
    output_lens: np.ndarray
    device_idx: np.ndarray  # which device profile serves each request


@dataclass(frozen=True)
class Fleet:
    settings: SplitSettings
    devices: list[DeviceProfile]
    cloud: CloudProfile
    network: NetworkProfile
    slots: int
    slo_ttft_s: float
    slo_tpot_s: float
    percentile: float = 90.0
    prefill_chunk_tokens: int = (
        EngineConfig.prefill_chunk_tokens
    )  # the engine's chunked prefill (0: whole prompts first)


@dataclass(frozen=True)
class ModeResult:
    ttft: np.ndarray
    tpot: np.ndarray
    max_tpot: np.ndarray
    cloud_busy_s: float  # per request
    utilisation: float
    stall_rate: float
    mean_handoff: float

    def meets(self, fleet: Fleet) -> bool:
        p = fleet.percentile
        return bool(
            np.percentile(self.ttft, p) <= fleet.slo_ttft_s
            and np.percentile(self.max_tpot, p) <= fleet.slo_tpot_s
        )


def poisson_workload(
    rate: float, num: int, input_lens: list[int], output_len: int, num_devices: int, seed: int = 0
) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload(
        arrivals=np.cumsum(rng.exponential(1.0 / rate, num)),
        prompt_lens=rng.choice(np.asarray(input_lens), num),
        output_lens=np.full(num, output_len),
        device_idx=rng.integers(0, num_devices, num),
    )


def trace_workload(path: Path, num: int, num_devices: int, output_len: int | None, seed: int = 0):
    trace = load_trace(path)
    reqs = [trace[i % len(trace)] for i in range(num)]  # a short trace repeats, shifted in time
    span = trace[-1].timestamp_s + 1.0
    arrivals = np.array([r.timestamp_s + (i // len(trace)) * span for i, r in enumerate(reqs)])
    return Workload(
        arrivals=arrivals,
        prompt_lens=np.array([r.input_length for r in reqs]),
        output_lens=np.array([output_len or r.output_length for r in reqs]),
        device_idx=np.random.default_rng(seed).integers(0, num_devices, num),
    )


def scaled(work: Workload, rate: float) -> Workload:
    """The same requests arriving at ``rate`` per second on average."""
    mean_rate = len(work.arrivals) / max(work.arrivals[-1], 1e-9)
    return Workload(
        work.arrivals * (mean_rate / rate), work.prompt_lens, work.output_lens, work.device_idx
    )


def _device_times(work: Workload, fleet: Fleet) -> tuple[np.ndarray, np.ndarray]:
    """(TTFT, mean τd) of each request on its own device."""
    ttft = np.array(
        [
            fleet.devices[d].prefill.time(int(L))
            for d, L in zip(work.device_idx, work.prompt_lens, strict=False)
        ]
    )
    tau = np.array(
        [
            fleet.devices[d].decode.mean_time(int(L), int(o))
            for d, L, o in zip(work.device_idx, work.prompt_lens, work.output_lens, strict=False)
        ]
    )
    return ttft, tau


def _arrivals(first: float, end: float, num: int, start: float, fleet: Fleet, rng) -> list[float]:
    """Device-relative arrival of each cloud token (uniform between first and last, + jitter)."""
    half = fleet.network.rtt_s / 2
    times = np.linspace(first, end, num) + half - start
    if fleet.network.jitter_s > 0:
        times = np.maximum.accumulate(times + rng.uniform(0, fleet.network.jitter_s, num))
    return times.tolist()


def _run_cloud(work: Workload, num_tokens: np.ndarray, fleet: Fleet):
    return simulate_cloud(
        work.arrivals + fleet.network.rtt_s / 2,
        work.prompt_lens,
        num_tokens,
        fleet.cloud,
        fleet.slots,
        fleet.prefill_chunk_tokens,
    )


def simulate_mode(mode: str, work: Workload, fleet: Fleet, sample: int | None = None) -> ModeResult:
    """One mode over the whole workload; ``sample`` limits the pd display loops (rate search)."""
    dev_ttft, dev_tau = _device_times(work, fleet)
    _n, out = len(work.arrivals), work.output_lens
    if mode == "device-only":
        return ModeResult(dev_ttft, dev_tau, dev_tau, 0.0, 0.0, 0.0, 0.0)
    if mode == "cloud-only":
        run = _run_cloud(work, out, fleet)
        ttft = run.first_token_at + fleet.network.rtt_s / 2 - work.arrivals
        tpot = (run.decode_end_at - run.first_token_at) / np.maximum(out - 1, 1)
        return ModeResult(
            ttft, tpot, tpot, float(run.busy_s.mean()), run.utilisation, 0.0, float(np.mean(out))
        )
    if mode != "pd":
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return _simulate_pd(work, fleet, dev_ttft, dev_tau, sample)


def _simulate_pd(work: Workload, fleet: Fleet, dev_ttft, dev_tau, sample: int | None) -> ModeResult:
    buckets = fleet.settings.buckets
    edges = np.array([b.max_prompt_len for b in buckets])
    which = np.minimum(np.searchsorted(edges, work.prompt_lens), len(buckets) - 1)
    use_cloud = np.array([buckets[k].use_cloud for k in which])
    budget = np.array([buckets[k].cloud_tokens for k in which])
    num_tokens = np.where(use_cloud, np.minimum(1 + budget, work.output_lens), 0)
    run = _run_cloud(work, num_tokens, fleet)
    rng = np.random.default_rng(1)
    idx = np.flatnonzero(use_cloud)
    if sample is not None and len(idx) > sample:
        idx = rng.choice(idx, sample, replace=False)
    keep = np.zeros(len(work.arrivals), bool)
    keep[idx] = True
    keep |= ~use_cloud
    ttft, tpot, max_tpot = dev_ttft.copy(), dev_tau.copy(), dev_tau.copy()
    stalls = handoffs = 0
    for i in idx:
        res, tail = _display_one(i, work, fleet, buckets[which[i]], run, rng)
        out = int(work.output_lens[i])
        e2e = res.own_shown_at + max(out - res.handoff_index - 1, 0) * dev_tau[i]
        ttft[i] = res.first_shown_at
        tpot[i] = (e2e - res.first_shown_at) / max(out - 1, 1)
        max_tpot[i] = max(res.max_gap_s, tail)
        stalls += res.handoff_gap_s > buckets[which[i]].max_interval_s + 1e-6
        handoffs += res.handoff_index
    busy = float(run.busy_s.mean())
    return ModeResult(
        ttft[keep],
        tpot[keep],
        max_tpot[keep],
        busy,
        run.utilisation,
        stalls / max(len(idx), 1),
        handoffs / max(len(idx), 1),
    )


def _display_one(i: int, work: Workload, fleet: Fleet, bucket, run, rng):
    dev = fleet.devices[work.device_idx[i]]
    L, out = int(work.prompt_lens[i]), int(work.output_lens[i])
    kept = kept_prompt_len(L, bucket.refine_ratio)
    num = min(1 + bucket.cloud_tokens, out)
    arrivals = _arrivals(
        run.first_token_at[i], run.decode_end_at[i], num, work.arrivals[i], fleet, rng
    )
    prompt_s = prompt_done_time(L, bucket.refine_ratio, arrivals[0], dev)
    pacing = PacingConfig(
        bucket.min_interval_s, bucket.max_interval_s, dev.decode.time(L), kept / prompt_s
    )
    res = run_display(pacing, arrivals, kept, prompt_s, lambda k: absorb_time(k, kept, dev))
    tail = dev.decode.time(L + out) if res.handoff_index < out else 0.0
    return res, tail


def max_rate(mode: str, work: Workload, fleet: Fleet, sample: int, tol: float = 0.03) -> float:
    """The largest mean request rate whose SLO percentile holds (doubling, then bisection)."""
    if mode == "device-only":
        return math.inf
    lo, hi = 0.0, 0.05
    while simulate_mode(mode, scaled(work, hi), fleet, sample).meets(fleet):
        lo, hi = hi, hi * 2
        if hi > 1e6:
            return math.inf
    while hi - lo > tol * hi:
        mid = (lo + hi) / 2
        if simulate_mode(mode, scaled(work, mid), fleet, sample).meets(fleet):
            lo = mid
        else:
            hi = mid
    return lo


def _summary(name: str, res: ModeResult, rate: float) -> dict:
    pct = {f"p{p}": float(np.percentile(res.ttft, p)) for p in (50, 90, 99)}
    return {
        "mode": name,
        "ttft_s": {**pct, "mean": float(res.ttft.mean())},
        "tpot_s": {f"p{p}": float(np.percentile(res.tpot, p)) for p in (50, 90, 99)},
        "max_tpot_s": {f"p{p}": float(np.percentile(res.max_tpot, p)) for p in (50, 90, 99)},
        "cloud_busy_s_per_request": res.cloud_busy_s,
        "cloud_utilisation": res.utilisation,
        "stall_rate": res.stall_rate,
        "mean_cloud_tokens_shown": res.mean_handoff,
        "max_rate_under_slo": rate,
    }


def _print(row: dict) -> None:
    t, mt = row["ttft_s"], row["max_tpot_s"]
    rate = row["max_rate_under_slo"]
    typer.echo(
        f"{row['mode']:11s} TTFT p50/p90/p99 {t['p50']:.2f}/{t['p90']:.2f}/{t['p99']:.2f} s"
        f"  TPOT p50 {row['tpot_s']['p50'] * 1e3:.0f} ms  max-TPOT p90 {mt['p90'] * 1e3:.0f} ms"
        f"  cloud {row['cloud_busy_s_per_request']:.2f} s/req util {row['cloud_utilisation']:.0%}"
        f"  stalls {row['stall_rate']:.1%}  max rate {rate:.3g} req/s"
    )


def _default_slo(work: Workload, fleet_args: dict, settings: SplitSettings) -> tuple[float, float]:
    """2x the slowest unloaded cloud TTFT of the workload; the widest pacing bound + 20%."""
    cloud, net = fleet_args["cloud"], fleet_args["network"]
    ttft = 2.0 * max(net.rtt_s + cloud.prefill.time(int(L)) for L in np.unique(work.prompt_lens))
    tpot = 1.2 * max(b.max_interval_s for b in settings.buckets)
    return ttft, tpot


def simulate_command(
    settings: Path = typer.Option(..., help="settings JSON (pdd tune)"),
    device_profiles: str = typer.Option(..., help="comma-separated device profile JSONs"),
    cloud_profile: Path = typer.Option(..., help="cloud profile JSON"),
    cloud_slots: int = typer.Option(8, min=1, help="K: requests the cloud runs at once"),
    prefill_chunk_tokens: int = typer.Option(
        EngineConfig.prefill_chunk_tokens,
        min=0,
        help="the engine's chunked prefill, as `pdd serve` (0: whole prompts)",
    ),
    trace: Path = typer.Option(None, help="Mooncake JSONL trace (arrivals and lengths)"),
    request_rate: float = typer.Option(None, help="Poisson arrivals per second"),
    input_lens: str = typer.Option("256,512,1024", help="prompt lengths drawn uniformly (Poisson)"),
    output_len: int = typer.Option(256, help="answer length O (overrides the trace's)"),
    num_requests: int = typer.Option(100_000, min=10),
    rtt_ms: float = typer.Option(50.0),
    jitter_ms: float = typer.Option(0.0),
    slo: str = typer.Option("", help="ttft:MS,tpot:MS (default: see docs/tuner.md)"),
    percentile: float = typer.Option(90.0, help="SLO percentile"),
    search_requests: int = typer.Option(20_000, help="requests per probe of the rate search"),
    search_sample: int = typer.Option(2_000, help="pd display loops per probe"),
    output: Path = typer.Option(None, "-o", "--output", help="write the report JSON"),
) -> None:
    """Simulate the fleet in cloud-only, device-only and pd modes; report the cloud gain."""
    try:
        split = SplitSettings.load(settings)
        devices = [
            load_profile(p.strip(), "device") for p in device_profiles.split(",") if p.strip()
        ]
        cloud = load_profile(cloud_profile, "cloud")
        if (trace is None) == (request_rate is None):
            raise ValueError("give exactly one of --trace and --request-rate")
        if trace is not None:
            work = trace_workload(trace, num_requests, len(devices), output_len)
        else:
            lens = [int(x) for x in input_lens.split(",") if x.strip()]
            work = poisson_workload(request_rate, num_requests, lens, output_len, len(devices))
        ttft_s, tpot_s = parse_slo(slo)
    except (ProfileError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    args = {"cloud": cloud, "network": NetworkProfile(rtt_ms / 1e3, jitter_ms / 1e3)}
    d_ttft, d_tpot = _default_slo(work, args, split)
    fleet = Fleet(
        split,
        devices,
        slots=cloud_slots,
        prefill_chunk_tokens=prefill_chunk_tokens,
        slo_ttft_s=ttft_s or d_ttft,
        slo_tpot_s=tpot_s or d_tpot,
        percentile=percentile,
        **args,
    )
    typer.echo(
        f"{num_requests} requests, {len(devices)} device profile(s), K={cloud_slots}, SLO p{percentile:g} "
        f"TTFT <= {fleet.slo_ttft_s:.2f} s, max-TPOT <= {fleet.slo_tpot_s * 1e3:.0f} ms"
    )
    report = run_modes(work, fleet, search_requests, search_sample)
    typer.echo(
        f"cloud throughput gain pd/cloud-only: {report['gain']:.2f}x at the SLO "
        f"({report['busy_gain']:.2f}x in busy seconds)"
    )
    if output:
        output.write_text(json.dumps(report, indent=2) + "\n")


def run_modes(work: Workload, fleet: Fleet, search_requests: int, search_sample: int) -> dict:
    """Every mode over the whole workload, plus its largest rate under the SLO."""
    fields = (work.arrivals, work.prompt_lens, work.output_lens, work.device_idx)
    probe = Workload(*(a[:search_requests] for a in fields))
    rows = []
    for mode in MODES:
        rate = max_rate(mode, probe, fleet, search_sample)
        rows.append(_summary(mode, simulate_mode(mode, work, fleet), rate))
        _print(rows[-1])
    cloud_only, pd = rows[0], rows[2]
    slo = {"ttft_s": fleet.slo_ttft_s, "tpot_s": fleet.slo_tpot_s, "percentile": fleet.percentile}
    return {
        "modes": rows,
        "gain": pd["max_rate_under_slo"] / max(cloud_only["max_rate_under_slo"], 1e-12),
        "busy_gain": cloud_only["cloud_busy_s_per_request"]
        / max(pd["cloud_busy_s_per_request"], 1e-12),
        "slo": slo,
    }
