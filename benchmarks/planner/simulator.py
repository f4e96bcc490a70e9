"""``pdd simulate``: a fleet of heterogeneous devices against one cloud with K slots.

Cloud throughput gain (the paper's definition): the requests per second the same cloud sustains
under the same SLO, pd against cloud-only. Here: the largest mean request rate whose SLO
attainment stays at the SLO percentile (``sim_fleet.max_rate``), pd over cloud-only; a request
meets the SLO only with what its mode promises (``sim_fleet``). Workloads: Poisson arrivals, or a
Mooncake trace replayed as it is (timestamps, lengths), rescaled in time for each rate probed.
Without ``--settings`` each device class is tuned here with ``pdd tune``'s tuner.
"""

from __future__ import annotations

import json
import math

import numpy as np
import typer

from benchmarks.planner.options import SimulateOptions, fail
from benchmarks.planner.profiles import check_prompt_lens, load_named, settings_path
from benchmarks.planner.sim_fleet import MODES, Fleet, ModeResult, max_rate, simulate_mode
from benchmarks.planner.sim_workload import Workload, poisson_workload, scaled, trace_workload
from benchmarks.planner.tuner import Slo, TuneConfig, tune
from benchmarks.planner.tuning_inputs import parse_slo
from cloud_server.config import EngineConfig
from common.cli_options import command_from, config_json
from common.profiles import NetworkProfile, ProfileError, with_speed_error
from common.settings import SplitSettings

DEFAULT_SLO_TTFT_MIN_S = 1.0


def default_slo(
    work: Workload, fleet_args: dict, settings: list[SplitSettings]
) -> tuple[float, float]:
    """TTFT: twice the p90 over the workload of the unloaded cloud TTFT (RTT + Tpc(L)), at least
    1 s; max TPOT: the widest pacing bound + 20%. Profiles refuse lengths they do not cover, so
    this never rests on a fit extrapolated far past its measurements."""
    cloud, net = fleet_args["cloud"], fleet_args["network"]
    unloaded = [net.rtt_s + cloud.prefill.time(int(L)) for L in work.prompt_lens]
    ttft = max(DEFAULT_SLO_TTFT_MIN_S, 2.0 * float(np.percentile(unloaded, 90)))
    tpot = 1.2 * max(b.max_interval_s for s in settings for b in s.buckets)
    return ttft, tpot


def tuned_settings(
    devices, cloud, work: Workload, network, slo: Slo, refine=None, slots: int = 8
) -> list:
    """One settings file per device class, tuned for the workload's lengths (powers of two)
    and the cloud's ``slots``."""
    longest, edges, edge = int(work.prompt_lens.max()), [], 128
    while True:
        edges.append(edge)
        if edge >= longest:
            break
        edge *= 2
    out_len = max(int(np.median(work.output_lens)), 2)
    quality, floor = refine if refine else (None, None)
    cfg = TuneConfig(
        edges, out_len, network, slo, quality=quality, quality_floor=floor, cloud_slots=slots
    )
    return [tune(dev, cloud, cfg) for dev in devices]


def chunk_tokens(given: int | None, settings: list[SplitSettings]) -> int:
    """The cloud's prefill chunk: as given, else the smallest the settings' tuner recommends
    (``chunk_plan``: it keeps pd streams at their Δplan under load), else the engine's default."""
    if given is not None:
        return given
    recs = [((s.tuner or {}).get("cloud") or {}).get("prefill_chunk_tokens") for s in settings]
    recs = [r for r in recs if r]
    return min(recs) if recs else EngineConfig.prefill_chunk_tokens


def summarise(name: str, res: ModeResult, rate: float | None) -> dict:
    pct = {f"p{p}": float(np.percentile(res.ttft, p)) for p in (50, 90, 99)}
    return {
        "mode": name,
        "ttft_s": {**pct, "mean": float(res.ttft.mean())},
        "tpot_s": {f"p{p}": float(np.percentile(res.tpot, p)) for p in (50, 90, 99)},
        "max_tpot_s": {f"p{p}": float(np.percentile(res.max_tpot_s, p)) for p in (50, 90, 99)},
        "slo_attainment": res.attainment,
        "cloud_busy_s_per_request": res.cloud_busy_s,
        "cloud_tokens_per_request": res.cloud_tokens,
        "cloud_utilisation": res.utilisation,
        "stall_rate": res.stall_rate,
        "mean_cloud_tokens_shown": res.mean_handoff,
        "share_device_only": res.share_device_only,
        "share_cloud_only": res.share_cloud_only,
        "max_rate_under_slo": None if rate is None or math.isinf(rate) else rate,
    }


def _rate_text(row: dict) -> str:
    rate = row["max_rate_under_slo"]
    if row["mode"] == "device-only":
        return "max rate n/a (no cloud)"
    if rate is None:
        return "max rate unbounded (no cloud load)"
    return f"max rate {rate:.3g} req/s" if rate > 0 else "meets the SLO at no rate probed"


def _print(row: dict) -> None:
    t, mt = row["ttft_s"], row["max_tpot_s"]
    typer.echo(
        f"{row['mode']:11s} TTFT p50/p90 {t['p50']:.2f}/{t['p90']:.2f} s"
        f"  max-TPOT p90 {mt['p90'] * 1e3:.0f} ms  SLO met {row['slo_attainment']:.1%}"
        f"  cloud {row['cloud_busy_s_per_request']:.3f} s/req util {row['cloud_utilisation']:.0%}"
        f"  stalls {row['stall_rate']:.1%}  {_rate_text(row)}"
    )


def gain_of(rows: list[dict]) -> tuple[float | None, str]:
    """pd's max rate over cloud-only's; None with the reason when the ratio means nothing."""
    cloud_only, pd = rows[0]["max_rate_under_slo"], rows[2]["max_rate_under_slo"]
    if cloud_only is None or cloud_only <= 0:
        return None, "cloud-only meets the SLO at no rate probed: no gain to state"
    if pd is None:
        return None, "pd sends no request to the cloud under these settings (device-only)"
    if pd <= 0:
        return 0.0, "pd meets the SLO at no rate probed"
    return pd / cloud_only, ""


def run_modes(
    work: Workload,
    fleet: Fleet,
    search_requests: int,
    search_sample: int,
    sample: int | None = None,
) -> dict:
    """Every mode over the whole workload at its own rate, plus its largest rate under the SLO;
    ``sample``: pd displays simulated over the whole workload (None: all; the cloud runs all)."""
    probe = work.head(search_requests)
    rows, start = [], 0.05
    for mode in MODES:  # cloud-only first: pd's search starts at its rate
        rate = max_rate(mode, probe, fleet, search_sample, start=start)
        if mode == "cloud-only" and rate > 0:
            start = rate
        rows.append(summarise(mode, simulate_mode(mode, work, fleet, sample), rate))
    gain, why = gain_of(rows)
    busy = rows[0]["cloud_busy_s_per_request"] / max(rows[2]["cloud_busy_s_per_request"], 1e-12)
    slo = {"ttft_s": fleet.slo_ttft_s, "tpot_s": fleet.slo_tpot_s, "percentile": fleet.percentile}
    return {"modes": rows, "gain": gain, "gain_note": why, "busy_gain": busy, "slo": slo}


def _load_row(res: ModeResult) -> dict:
    """What one mode did at one load point (a rate, or M closed-loop devices)."""
    return {
        "slo_attainment": res.attainment,
        "stall_rate": res.stall_rate,
        "ttft_p90_s": float(np.percentile(res.ttft, 90)),
        "max_tpot_p90_s": float(np.percentile(res.max_tpot_s, 90)),
        "cloud_utilisation": res.utilisation,
        "cloud_slot_s_per_request": res.cloud_slot_s,
        "sustained_rate": res.sustained_rate,
    }


def rate_table(work: Workload, fleet: Fleet, rates: list[float], sample: int) -> list[dict]:
    """SLO attainment and goodput (requests/s that meet the SLO) of each mode at each rate."""
    rows = []
    for rate in rates:
        for mode in ("cloud-only", "pd"):
            res = simulate_mode(mode, scaled(work, rate), fleet, sample)
            r = {"rate": rate, "mode": mode, "goodput": rate * res.attainment} | _load_row(res)
            rows.append(r)
            typer.echo(
                f"  rate {rate:8.3g} req/s {mode:10s} SLO met {r['slo_attainment']:6.1%}  goodput "
                f"{r['goodput']:8.3g} req/s  TTFT p90 {r['ttft_p90_s']:.2f} s  stalls "
                f"{r['stall_rate']:.1%}  util {r['cloud_utilisation']:.0%}"
            )
    return rows


def closed_loop_table(work: Workload, fleet: Fleet, devices: list[int], sample: int) -> list[dict]:
    """Each mode with M closed-loop devices taking the workload's requests in order (its arrival
    times unused): the rate the loop sustains, SLO attainment, p90 TTFT and max TPOT, and cloud
    slot seconds per request, the figures ``pdd bench --virtual-devices M`` measures live
    (``pdd study sim-validation`` compares the two)."""
    rows = []
    for m in devices:
        for mode in ("cloud-only", "pd"):
            res = simulate_mode(mode, work, fleet, sample, closed_loop_devices=m)
            r = {"devices": m, "mode": mode} | _load_row(res)
            rows.append(r)
            typer.echo(
                f"  {m:4d} devices {mode:10s} sustained {r['sustained_rate']:8.3g} req/s  SLO met "
                f"{r['slo_attainment']:6.1%}  TTFT p90 {r['ttft_p90_s']:.2f} s  max-TPOT p90 "
                f"{r['max_tpot_p90_s'] * 1e3:.0f} ms  cloud {r['cloud_slot_s_per_request']:.3f} "
                f"slot-s/req  stalls {r['stall_rate']:.1%}"
            )
    return rows


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _workload(
    trace, request_rate, input_lens, output_len, num, num_devices, max_input_len, cache, sessions
):
    if trace is not None:
        work = trace_workload(
            trace, num, num_devices, output_len, max_input_len, 0, cache, sessions
        )
        return work if request_rate is None else scaled(work, request_rate)
    if request_rate is None:
        raise ValueError("give --trace, --request-rate, or both (a trace rescaled to that rate)")
    lens = [int(x) for x in _floats(input_lens, "--input-lens")]
    return poisson_workload(request_rate, num, lens, output_len or 256, num_devices)


@command_from(SimulateOptions, on_error=fail)
def simulate_command(opts: SimulateOptions) -> None:
    """Simulate the fleet in cloud-only, device-only and pd modes; report the cloud gain."""
    network = NetworkProfile(opts.rtt_ms / 1e3, opts.jitter_ms / 1e3)
    try:
        names = [p.strip() for p in opts.device_profiles.split(",") if p.strip()]
        devices = [load_named(name, "device") for name in names]
        planned = [with_speed_error(d, opts.device_error) for d in devices]  # what tuning reads
        cloud = load_named(opts.cloud_profile, "cloud")
        num = opts.num_requests or (None if opts.trace else 100_000)
        work = _workload(
            opts.trace,
            opts.request_rate,
            opts.input_lens,
            opts.output_len,
            num,
            len(devices),
            opts.max_input_len,
            opts.prefix_cache,
            opts.sessions,
        )
        notes = [check_prompt_lens(p, int(work.prompt_lens.max())) for p in (*devices, cloud)]
        ttft_s, tpot_s = parse_slo(opts.slo)
        split = (
            [SplitSettings.load(settings_path(opts.settings))]
            if opts.settings
            else tuned_settings(
                planned, cloud, work, network, Slo(ttft_s, tpot_s), slots=opts.cloud_slots
            )
        )
        rate_list = _floats(opts.rates, "--rates")
        loops = [int(m) for m in _floats(opts.closed_loop_devices, "--closed-loop-devices")]
        if any(m < 1 for m in loops):
            raise ValueError(f"--closed-loop-devices must be >= 1 each, got {loops}")
    except (ProfileError, ValueError, OSError) as exc:
        fail(str(exc))
    d_ttft, d_tpot = default_slo(work, {"cloud": cloud, "network": network}, split)
    fleet = Fleet(
        split,
        devices,
        cloud,
        network,
        opts.cloud_slots,
        ttft_s or d_ttft,
        tpot_s or d_tpot,
        opts.percentile,
        chunk_tokens(opts.prefill_chunk_tokens, split),
        device_speed_sigma=opts.device_speed_sigma,
    )
    for note in filter(None, notes):
        typer.echo(note)
    _header(work, fleet, opts.settings, bool(opts.slo))
    report = run_modes(
        work, fleet, opts.search_requests, opts.search_sample, opts.display_sample or None
    )
    for row in report["modes"]:
        _print(row)
    if report["gain"] is None:
        typer.echo(f"cloud throughput gain pd/cloud-only: none ({report['gain_note']})")
    else:
        typer.echo(
            f"cloud throughput gain pd/cloud-only: {report['gain']:.2f}x at the SLO "
            f"(requests/s the same cloud sustains; {report['busy_gain']:.2f}x in busy seconds)"
        )
    if rate_list:
        report["rates"] = rate_table(work, fleet, rate_list, opts.search_sample)
    if loops:
        report["closed_loop"] = closed_loop_table(work, fleet, loops, opts.search_sample)
    if opts.output:
        report["options"] = config_json(opts)
        opts.output.write_text(json.dumps(report, indent=2) + "\n")


def _header(work: Workload, fleet: Fleet, settings: str | None, slo_given: bool) -> None:
    where = f"trace {work.name}" if work.name != "poisson" else "Poisson arrivals"
    dropped = f" ({work.dropped} longer requests dropped)" if work.dropped else ""
    if work.cached_lens is not None:
        share = work.cached_lens.sum() / work.prompt_lens.sum()
        dropped += f", cloud prefix cache ({share:.0%} of prompt tokens cached)"
    if work.device_cached_lens is not None:
        share = work.device_cached_lens.sum() / work.prompt_lens.sum()
        follow = (work.device_cached_lens > 0).mean()
        dropped += f", device sessions ({follow:.0%} follow-ups; {share:.0%} of tokens cached)"
    typer.echo(
        f"{len(work.arrivals)} requests, {where}{dropped} at {work.mean_rate:.3g} req/s, "
        f"{len(fleet.devices)} device class(es), K={fleet.slots}; settings "
        f"{settings or 'tuned here per device class'}; SLO{'' if slo_given else ' (default)'}: "
        f"{fleet.percentile:g}% of requests with TTFT <= {fleet.slo_ttft_s:.2f} s and max-TPOT "
        f"<= {fleet.slo_tpot_s * 1e3:.0f} ms (pd: first token from the cloud, no stall)"
    )
    if fleet.device_speed_sigma > 0:
        typer.echo(
            f"devices off their profiles: each request's device takes f x the profile's time, "
            f"f lognormal, median 1, sigma {fleet.device_speed_sigma:g}"
        )
