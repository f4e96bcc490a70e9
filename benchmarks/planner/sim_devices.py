"""The fleet simulator's devices: how fast each request's device really runs, its own TTFT and
time per token, and its pd display (the product's answer state, ``sim_display``).

A request's device is its class's profile, slowed by the request's speed factor
(``Fleet.device_speed_sigma``; all 1 by default): the settings and the pacing's priors read the
profile, as the client does, and the speed controller then measures the prefill it sees.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from benchmarks.planner.sim_cloud import CloudRun
from benchmarks.planner.sim_display import DisplayResult, run_display
from benchmarks.planner.sim_workload import Workload
from common.profiles import DeviceProfile, NetworkProfile, slowed
from common.timing_model import absorb_time, kept_prompt_len, prompt_done_time
from device_client.speed_controller import PacingConfig

SPEED_SEED = 7


@functools.lru_cache(maxsize=4)
def speed_factors(sigma: float, num: int) -> np.ndarray:
    """Per request, how much slower than its profile its device runs (read-only): lognormal,
    median 1, quantised to 0.1% so the slowed profiles repeat. All 1 when ``sigma`` is 0."""
    if sigma <= 0:
        factors = np.ones(num)
    else:
        z = np.random.default_rng(SPEED_SEED).standard_normal(num)
        factors = np.round(np.exp(sigma * z), 3)
    factors.flags.writeable = False
    return factors


def running_devices(
    work: Workload, devices: list[DeviceProfile], sigma: float
) -> Callable[[int], DeviceProfile]:
    """Request i -> its device as it runs: its class's profile slowed by its speed factor."""
    factors = speed_factors(sigma, len(work.arrivals))
    made: dict[tuple[int, float], DeviceProfile] = {}

    def of(i: int) -> DeviceProfile:
        key = (int(work.device_idx[i]), float(factors[i]))
        if key not in made:
            made[key] = slowed(devices[key[0]], key[1])
        return made[key]

    return of


def device_times(
    work: Workload, devices: list[DeviceProfile], sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """(TTFT, mean τd) of each request on its own device."""
    pairs = [
        (dev.prefill.extend_time(int(L - c), int(c)), dev.decode.mean_time(int(L), int(o)))
        for dev, L, c, o in zip(
            (devices[d] for d in work.device_idx),
            work.prompt_lens,
            work.device_cached,  # a session's cache: only the rest is prefilled
            work.output_lens,
            strict=True,
        )
    ]
    arr = np.array(pairs, dtype=float).reshape(-1, 2)
    factors = speed_factors(sigma, len(work.arrivals))
    return arr[:, 0] * factors, arr[:, 1] * factors  # both linear in the profile's times


def display_one(
    i: int,
    work: Workload,
    bucket,
    run: CloudRun,
    pace: float,
    network: NetworkProfile,
    rng: np.random.Generator,
    profile: DeviceProfile,
    dev: DeviceProfile | None = None,
) -> tuple[DisplayResult, float]:
    """Request i's display on a device with this ``profile``, running as ``dev`` (default:
    exactly the profile). The pacing's priors come from the profile, as in the client; the
    speed controller then measures the prefill it sees."""
    dev = dev or profile
    L, out = int(work.device_new_lens[i]), int(work.output_lens[i])  # the part still to prefill
    cached = int(work.device_cached[i])  # what the device's session cache already holds
    kept = kept_prompt_len(L, bucket.refine_ratio)
    cap = min(1 + bucket.cloud_tokens, out)
    arrivals = token_arrivals(run.token_times(i), pace, cap, work.arrivals[i], network, rng)
    prompt_s = prompt_done_time(L, bucket.refine_ratio, arrivals[0], dev, cached)
    prior_s = prompt_done_time(L, bucket.refine_ratio, arrivals[0], profile, cached)
    pacing = PacingConfig(
        bucket.min_interval_s,
        bucket.max_interval_s,
        profile.decode.time(cached + L),
        kept / prior_s,
    )
    res = run_display(
        pacing, arrivals, kept, prompt_s, lambda k: absorb_time(k, cached + kept, dev)
    )
    tail = dev.decode.time(cached + L + out) if res.handoff_index < out else 0.0
    return res, tail


def token_arrivals(
    sent: np.ndarray, pace: float, num: int, start: float, network: NetworkProfile, rng
) -> list[float]:
    """Device-relative arrival of each cloud token: when the cloud sent it (pauses for other
    requests' prefills included) + RTT/2 and uniform jitter. The cloud stopped at the handoff;
    the tokens it never sent, up to the cap, follow at its mean pace (after the handoff, so
    the display never shows them; the answer state sees the budget it was given)."""
    step = pace if math.isfinite(pace) else 0.0
    extra = sent[-1] + step * np.arange(1, num - len(sent) + 1)
    times = np.concatenate([sent, extra])[:num] + network.rtt_s / 2 - start
    if network.jitter_s > 0:
        times = np.maximum.accumulate(times + rng.uniform(0, network.jitter_s, num))
    return times.tolist()
