"""The simulator against live ``pdd bench --virtual-devices`` runs (issue 15's validation).

Each bench result (one load: M closed-loop virtual devices, cloud-only then pd with a fixed N)
is replayed in the simulator with the same profiles, prompt lengths, answer length, N, slots
and number of requests, closed-loop as the live run (``sim_fleet.closed_loop``: M devices, each
sending its next request when the End of its last one reaches it), so the sustained rate is a
prediction, not an input. Compared per load and mode, live against simulated: sustained request
rate (requests / wall), p90 TTFT, p90 max gap (cloud-only only: a virtual device records cloud
arrivals, not a display) and cloud busy seconds per request: the slot-holding time (the
engine's ``usage.busy_s``, admission to release) against the simulator's ``cloud_slot_s``. The
simulator's engine share (the fleet study's cost) is printed beside it, not compared. A row is
within target when every error is at most 20%.

Like with like: the live cloud must run without its prefix cache (the pd phase repeats the
cloud-only phase's prompts, which a cache would prefill for free; the simulator prefills them),
with the profile's thread count, and the profile must be taken on the same quiet machine. Run
(about 12 min; the profile about 2 min, each bench about 1.5-4 min)::

    pdd profile cloud --threads 1 --lengths 128,256,512,1024 -o cloud_quiet.json
    pdd serve --threads 1 --max-concurrent 4 --prefix-cache-mb 0 --port 8123 &
    for M in 2 4 8; do
      pdd bench --cloud http://127.0.0.1:8123 --virtual-devices $M \
        --device-profile cpu-device-x4 --input-lens 512 --output-len 128 --num-prompts 12 \
        --cloud-tokens 32 --rtt-ms 50 --save-result vd$M.json
    done
    kill %1
    pdd study sim-validation --cloud-profile cloud_quiet.json \
      --device-profile cpu-device-x4 --slots 4 vd2.json vd4.json vd8.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from benchmarks.planner.profiles import load_named
from benchmarks.planner.sim_fleet import Fleet, simulate_mode
from benchmarks.planner.sim_workload import poisson_workload
from common.profiles import NetworkProfile
from common.settings import Bucket, SplitSettings

TARGET = 0.20
MODES = {"cloud": "cloud-only", "pd": "pd"}


def _settings(n: int, tau_d: float) -> SplitSettings:
    bucket = Bucket(
        max_prompt_len=1 << 20,
        cloud_tokens=n,
        min_interval_s=tau_d,
        max_interval_s=1.5 * tau_d,
        reason="fixed N of the live run",
    )
    return SplitSettings(buckets=[bucket])


def compare(result: dict, device, cloud, slots: int, num: int | None = None) -> list[dict]:
    """Live against simulated, per mode, for one bench result (M closed-loop devices)."""
    cfg = result["config"]
    lens, out_len = cfg["input_lens"], int(cfg["output_len"])
    n = int(cfg.get("cloud_tokens") or 16)
    devices = int(result["virtual_devices"])
    net = NetworkProfile(float(cfg.get("rtt_ms", 50.0)) / 1e3, 0.0)
    tau_d = device.decode.time(max(lens))
    fleet = Fleet([_settings(n, tau_d)], [device], cloud, net, slots, 1e9, 1e9)
    rows = []
    for key, mode in MODES.items():
        live = result["modes"][key]
        count = num or int(live["completed"])  # the live run's requests, taken in order
        work = poisson_workload(1.0, count, lens, out_len, 1)  # arrival times unused
        res = simulate_mode(mode, work, fleet, closed_loop_devices=devices)
        sim = {
            "rate": res.sustained_rate,
            "p90_ttft_s": float(np.percentile(res.ttft, 90)),
            "cloud_busy_s": res.cloud_slot_s,  # slot-holding time, as the engine's usage.busy_s
        }
        meas = {
            "rate": float(live["sustained_request_rate"]),
            "p90_ttft_s": live["p90_ttft_ms"] / 1e3,
            "cloud_busy_s": live["mean_cloud_busy_s"],
        }
        if mode == "cloud-only":  # pd's live gaps are cloud arrivals, the simulator's displays
            sim["p90_max_tpot_s"] = float(np.percentile(res.max_tpot_s, 90))
            meas["p90_max_tpot_s"] = (live.get("p90_max_tpot_ms") or 0.0) / 1e3
        err = {k: (sim[k] - meas[k]) / meas[k] if meas[k] else None for k in sim}
        ok = all(e is not None and abs(e) <= TARGET for e in err.values())
        rows.append(
            {"devices": devices, "mode": mode, "engine_share_s": res.cloud_busy_s}
            | {"live": meas, "sim": sim, "err": err, "within_20pct": ok}
        )
    return rows


def main(
    results: list[Path] = typer.Argument(..., help="pdd bench --virtual-devices result JSONs"),
    cloud_profile: str = typer.Option("cpu-cloud", help="the cloud the live runs used"),
    device_profile: str = typer.Option("cpu-device-x4", help="the virtual devices' profile"),
    slots: int = typer.Option(4, help="the live cloud's --max-concurrent"),
    num_requests: int = typer.Option(None, help="requests per mode (default: the live run's)"),
) -> None:
    """Print live vs simulated per load and mode; exit 1 if a figure is off by more than 20%."""
    device, cloud = load_named(device_profile, "device"), load_named(cloud_profile, "cloud")
    rows = []
    for path in results:
        result = json.loads(path.read_text())
        refused = sum(int(m.get("failed", 0)) for m in result["modes"].values())
        if refused:  # the simulator queues for a slot; a live cloud without a queue refuses
            typer.echo(
                f"{path}: skipped, {refused} requests failed live (M = "
                f"{result['virtual_devices']} devices against {slots} slots: the cloud refused "
                "them at admission); compare runs with M <= slots + --max-queue"
            )
            continue
        rows += compare(result, device, cloud, slots, num_requests)
    for r in rows:
        cells = "  ".join(
            f"{k} {r['live'][k]:.3g}/{r['sim'][k]:.3g} ({(r['err'][k] or 0):+.0%})"
            for k in r["sim"]
        )
        flag = "ok" if r["within_20pct"] else "OFF"
        typer.echo(
            f"M={r['devices']} {r['mode']:10s} live/sim {cells}  "
            f"(sim engine share {r['engine_share_s']:.3g} s/req)  {flag}"
        )
    if not all(r["within_20pct"] for r in rows):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
