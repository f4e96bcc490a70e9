"""Why pd answers stall in the simulator: per stalled answer, what it received by its handoff.

    python -m benchmarks.planner.sim_stalls RATE CHUNK [NUM]   # e.g. 0.2 512 5000

The shipped CPU profiles (``cpu-cloud``, ``cpu-device-x4``), K = 8, prompts 256/512/1024, O = 256,
RTT 50 ms, jitter 10 ms, settings tuned here (as ``pdd simulate`` does); CHUNK is the cloud's
``prefill_chunk_tokens``. Prints the stall rate per bucket and, stalled against all: m, the
handoff gap, tokens buffered when the prompt was done, the largest cloud gap before the
handoff, and how many stalled answers had received their whole budget 1 + N (docs/tuner.md §5).
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.planner import sim_fleet as sf
from benchmarks.planner.profiles import load_named
from benchmarks.planner.sim_devices import display_one
from benchmarks.planner.sim_workload import poisson_workload
from benchmarks.planner.simulator import default_slo, tuned_settings
from benchmarks.planner.tuner import Slo
from common.profiles import NetworkProfile
from common.timing_model import is_stall, prompt_done_time


def answers(rate: float, chunk: int, num: int) -> list[dict]:
    dev, cloud = load_named("cpu-device-x4", "device"), load_named("cpu-cloud", "cloud")
    net = NetworkProfile(0.05, 0.01)
    work = poisson_workload(rate, num, [256, 512, 1024], 256, 1)
    split = tuned_settings([dev], cloud, work, net, Slo(), slots=8)
    ttft, tpot = default_slo(work, {"cloud": cloud, "network": net}, split)
    fleet = sf.Fleet(split, [dev], cloud, net, 8, ttft, tpot, 90.0, chunk)
    plan = sf._plan(work, fleet)
    run, work = sf._run_cloud(
        work, plan.cap, fleet, sf._handoff_hook(work, fleet, plan), scores=plan.scores
    )
    pace, rng, rows = sf._pace(run), np.random.default_rng(1), []
    for i in np.flatnonzero(plan.use_cloud & plan.use_device):
        res, _ = display_one(i, work, plan.buckets[i], run, pace[i], net, rng, dev)
        b, m = plan.buckets[i], res.handoff_index
        sent = run.token_times(i)
        first = sent[0] + net.rtt_s / 2 - work.arrivals[i]
        done = prompt_done_time(int(work.prompt_lens[i]), b.refine_ratio, first, dev)
        gaps = np.diff(sent)[: max(m - 1, 0)]
        rows.append({
            "L": int(work.prompt_lens[i]), "N": b.cloud_tokens, "m": m,
            "stall": is_stall(res.handoff_gap_s, b.max_interval_s), "gap": res.handoff_gap_s,
            "buffered": m - int((np.array(res.shown_at[:-1]) <= done).sum()),
            "cloud_gap": float(gaps.max()) if len(gaps) else 0.0,
        })  # fmt: skip
    return rows


def main(rate: float, chunk: int, num: int = 5000) -> None:
    rows = answers(rate, chunk, num)
    stalled = [r for r in rows if r["stall"]]
    print(f"rate {rate} chunk {chunk}: {len(stalled)}/{len(rows)} pd answers stall")
    for L in sorted({r["L"] for r in rows}):
        here = [r for r in rows if r["L"] == L]
        bad = sum(r["stall"] for r in here)
        print(f"  L={L} N={here[0]['N']}: {bad / len(here):.1%} stall, m mean "
              f"{np.mean([r['m'] for r in here]):.1f}")  # fmt: skip
    for key in ("m", "gap", "buffered", "cloud_gap") if stalled else ():
        med = [np.median([r[key] for r in rs]) for rs in (stalled, rows)]
        print(f"  median {key}: stalled {med[0]:.2f}, all {med[1]:.2f}")
    full = sum(r["m"] >= r["N"] + 1 for r in stalled)
    print(f"  stalled answers that had received their whole budget 1 + N: {full}/{len(stalled)}")


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]), *(int(a) for a in sys.argv[3:4]))
