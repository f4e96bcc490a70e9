"""The fleet study: where does pd reach the paper's "up to 15x"? (issue 15)

Cloud throughput gain = the requests per second the same cloud sustains under the same SLO, pd
against cloud-only (``pdd simulate``'s rate search; a pd request meets the SLO only with the
cloud's first token and no stall). One row per workload x device class x cloud class x answer
length, with and without refinement, plus the stall rate, the share of requests the tuner sends
device-only or cloud-only, and the best single fixed N against the tuned settings (cloud busy
seconds per request at the same rate, at the same or lower stall rate).

``python -m benchmarks.studies.fleet [--quick] [-o fleet.json]``. Profiles are the shipped ones
(``pdd profile list``: the phones and clouds are derived from published figures, not measured).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import typer

from benchmarks.planner.profiles import load_named
from benchmarks.planner.sim_fleet import Fleet, max_rate, simulate_mode
from benchmarks.planner.sim_workload import poisson_workload, scaled, trace_workload
from benchmarks.planner.simulator import chunk_tokens, tuned_settings
from benchmarks.planner.tuner import Slo
from benchmarks.planner.tuning_inputs import load_quality
from common.profiles import NetworkProfile
from common.settings import SplitSettings

QUALITY_FILE = Path(__file__).parents[2] / "docs" / "results" / "refine_quality.json"
QUALITY_FLOOR = 0.5  # as the README's pd+refine results
FIXED_NS = (16, 32, 64, 128, 256)
SLO_TTFT_S, SLO_TPOT_S = 2.0, 0.1  # interactive chat: first token in 2 s, no gap over 100 ms
SLOTS = 64  # KV-cache slots of one accelerator serving a 7-8B model at a few k tokens


@dataclass(frozen=True)
class Scenario:
    workload: str  # "chat-512" (Poisson, prompts 128-512) or "mooncake" (the trace, <= 8k)
    devices: tuple[str, ...]
    cloud: str
    output_len: int | None  # None: the trace's own answer lengths


def scenarios(quick: bool) -> list[Scenario]:
    phones = [("phone-llama1b-q4",), ("phone-llama3b-q4",)]
    if not quick:
        phones.append(("phone-llama1b-q4", "phone-llama3b-q4", "phone-qwen1.5b-llamacpp"))
    rows = []
    for cloud in ("h100-llama8b", "ascend-qwen7b"):
        for devs in phones:
            for out in (256, 1024) if not quick else (256,):
                rows.append(Scenario("chat-512", devs, cloud, out))
            rows.append(Scenario("mooncake", devs, cloud, None))
    return rows


def _workload(sc: Scenario, num: int, num_devices: int):
    if sc.workload == "mooncake":
        work = trace_workload(
            "mooncake-5min", num, num_devices, None, 8192, prefix_cache=True, sessions=True
        )
        return scaled(work, 1.0)
    return poisson_workload(1.0, num, [128, 256, 512], sc.output_len, num_devices)


def split_only(settings: list[SplitSettings], devices, cloud, work, net, slo) -> list:
    """The same settings with every device-only bucket made pd (the tuner sized at a TTFT target
    just above the cloud's): the gain of the split alone, without routing short prompts to the
    device."""
    from benchmarks.planner.tuner import InfeasibleError, TuneConfig, plan_bucket
    from common.timing_model import ttft_pd

    out = []
    for s, dev in zip(settings, devices, strict=True):
        buckets = []
        for b in s.buckets:
            if b.use_cloud:
                buckets.append(b)
                continue
            L = b.max_prompt_len
            cfg = TuneConfig(
                [L], int(np.median(work.output_lens)), net,
                replace(slo, ttft_s=ttft_pd(L, cloud, net) * 1.01),
            )  # fmt: skip
            try:
                buckets.append(plan_bucket(L, dev, cloud, cfg).bucket)
            except InfeasibleError:
                buckets.append(b)
        out.append(SplitSettings(buckets=buckets))
    return out


def _fixed(settings: list[SplitSettings], n: int) -> list[SplitSettings]:
    out = []
    for s in settings:
        buckets = [
            b.model_copy(update={"cloud_tokens": n}) if b.use_cloud and b.use_device else b
            for b in s.buckets
        ]
        out.append(SplitSettings(buckets=buckets))
    return out


def run_row(sc: Scenario, num: int, sample: int) -> dict:
    devices = [load_named(d, "device") for d in sc.devices]
    cloud = load_named(sc.cloud, "cloud")
    net = NetworkProfile(0.05, 0.01)
    work = _workload(sc, num, len(devices))
    slo = Slo(SLO_TTFT_S, SLO_TPOT_S)
    quality = (load_quality(QUALITY_FILE), QUALITY_FLOOR)
    row: dict = {"workload": sc.workload, "devices": list(sc.devices), "cloud": sc.cloud}
    row["output_len"] = sc.output_len or int(np.median(work.output_lens))
    base = chunk = None
    for label, refine in (("pd", None), ("pd+refine", quality), ("split only", None)):
        settings = tuned_settings(devices, cloud, work, net, slo, refine, slots=SLOTS)
        if label == "split only":
            settings = split_only(settings, devices, cloud, work, net, slo)
        if chunk is None:  # one cloud configuration per row: the tuner's chunk, for every mode
            chunk = row["prefill_chunk_tokens"] = chunk_tokens(None, settings)
        fleet = Fleet(settings, devices, cloud, net, SLOTS, SLO_TTFT_S, SLO_TPOT_S, 90.0, chunk)
        if base is None:
            base = max_rate("cloud-only", work, fleet, sample)
            row["cloud_only_rate"] = base
        rate = max_rate("pd", work, fleet, sample, start=max(base, 0.05))
        at = scaled(work, max(base, 1e-3))  # both compared at cloud-only's largest rate
        res = simulate_mode("pd", at, fleet, sample)
        row[label] = {
            "rate": rate,
            "gain": rate / base if base > 0 and math.isfinite(rate) else None,
            "stall_rate": res.stall_rate,
            "share_device_only": res.share_device_only,
            "share_cloud_only": res.share_cloud_only,
            "cloud_busy_s": res.cloud_busy_s,
            "cloud_tokens": res.cloud_tokens,
        }
        if label == "pd":
            row["fixed"] = _fixed_rows(at, fleet, settings, sample)
            row["why"] = _why(work, cloud, res, row["output_len"])
    return row


def _fixed_rows(work, fleet: Fleet, settings, sample: int) -> list[dict]:
    rows = []
    for n in FIXED_NS:
        res = simulate_mode("pd", work, _with(fleet, _fixed(settings, n)), sample)
        rows.append({"N": n, "cloud_busy_s": res.cloud_busy_s, "stall_rate": res.stall_rate})
    return rows


def _with(fleet: Fleet, settings) -> Fleet:
    return replace(fleet, settings=settings)


def _why(work, cloud, res, out_len: int) -> str:
    """The timing model's reading of the row: slot time per request, cloud-only vs pd."""
    tpc = float(np.mean([cloud.prefill.time(int(n)) for n in work.new_lens]))
    step = cloud.batch.step_time(SLOTS)
    m = res.cloud_tokens
    slot_gain = (tpc + out_len * step) / (tpc + m * step)
    return (
        f"Tpc {tpc * 1e3:.0f} ms, s(K) {step * 1e3:.1f} ms, O {out_len}, m {m:.0f}: a slot is held "
        f"Tpc + O·s = {(tpc + out_len * step):.2f} s cloud-only against Tpc + m·s = "
        f"{tpc + m * step:.2f} s pd ({slot_gain:.1f}x), and prefill alone caps the cloud at "
        f"{1 / tpc:.0f} req/s; {res.share_device_only:.0%} device-only, "
        f"{res.share_cloud_only:.0%} cloud-only"
    )


def _fmt(x) -> str:
    if x is None:
        return "-"
    return "never meets the SLO" if x == 0 else f"{x:.1f}x"


def _versus(tuned: float, fixed: float) -> str:
    """Tuned against the best fixed N, in cloud seconds: a tie within 0.01% says so."""
    rel = tuned / fixed - 1 if fixed > 0 else 0.0
    if abs(rel) < 1e-4:
        return "tie"
    return f"{rel:+.1%}" if abs(rel) >= 1e-3 else f"{rel:+.2%}"


def print_table(rows: list[dict]) -> None:
    typer.echo(
        "| workload | devices | cloud | O | chunk | cloud-only req/s | gain pd | gain pd+refine | "
        "gain split only | stalls | device-only / cloud-only share | tuned vs best fixed N "
        "(busy s, stalls) |"
    )
    typer.echo("|" + "---|" * 12)
    for r in rows:
        pd, rf = r["pd"], r["pd+refine"]
        ok = [f for f in r["fixed"] if f["stall_rate"] <= pd["stall_rate"] + 1e-9]
        best = min(ok, key=lambda f: f["cloud_busy_s"]) if ok else None
        vs = (
            f"{pd['cloud_busy_s']:.3f} / {pd['stall_rate']:.0%} vs N={best['N']} "
            f"{best['cloud_busy_s']:.3f} / {best['stall_rate']:.0%} "
            f"({_versus(pd['cloud_busy_s'], best['cloud_busy_s'])})"
            if best
            else f"{pd['cloud_busy_s']:.3f} / {pd['stall_rate']:.0%}; no fixed N as smooth"
        )
        typer.echo(
            f"| {r['workload']} | {'+'.join(d.removeprefix('phone-') for d in r['devices'])} | "
            f"{r['cloud']} | {r['output_len']} | {r['prefill_chunk_tokens']} | {r['cloud_only_rate']:.3g} | {_fmt(pd['gain'])} | "
            f"{_fmt(rf['gain'])} | {_fmt(r['split only']['gain'])} | {pd['stall_rate']:.1%} | {pd['share_device_only']:.0%} / "
            f"{pd['share_cloud_only']:.0%} | {vs} |"
        )
    typer.echo("")
    for r in rows:
        typer.echo(
            f"- {r['workload']}, {'+'.join(r['devices'])}, {r['cloud']}, O={r['output_len']}: {r['why']}"
        )


def main(
    quick: bool = typer.Option(False, help="fewer rows (one answer length, two phones)"),
    num_requests: int = typer.Option(3000, help="requests per probe"),
    sample: int = typer.Option(300, help="pd display loops per probe"),
    output: Path = typer.Option(None, "-o", "--output"),
) -> None:
    """Print the operator's table (markdown) and, with -o, save it as JSON."""
    rows = []
    for sc in scenarios(quick):
        rows.append(run_row(sc, num_requests, sample))
        typer.echo(f"done: {sc}", err=True)
    print_table(rows)
    if output:
        output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
