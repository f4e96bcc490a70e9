from __future__ import annotations

import numpy as np
import pytest
from tuner_profiles import fast_cloud, slow_device

from benchmarks.planner.sim_cloud import simulate_cloud
from benchmarks.planner.sim_display import run_display
from benchmarks.planner.sim_fleet import Fleet, simulate_mode
from benchmarks.planner.sim_workload import poisson_workload
from benchmarks.planner.tuner import Slo, TuneConfig, tune
from common.profiles import NetworkProfile
from device_client.speed_controller import PacingConfig


def _fleet(settings, **kw) -> Fleet:
    return Fleet([settings], [slow_device()], fast_cloud(), NetworkProfile(), 8, 10.0, 0.4, **kw)


def test_zero_jitter_reproduces_the_predicted_handoff_index():
    settings = tune(slow_device(), fast_cloud(), TuneConfig([1024], slo=Slo(ttft_s=1.0)))
    predicted = settings.predictions[0]["handoff_index"]
    work = poisson_workload(0.01, 50, [1024], 256, 1)  # light load: no queueing
    result = simulate_mode("pd", work, _fleet(settings))
    assert abs(result.mean_handoff - predicted) <= 1
    assert result.stall_rate == 0.0
    assert np.percentile(result.ttft, 50) == pytest.approx(
        settings.predictions[0]["ttft_s"], rel=0.05
    )


def test_pd_needs_fewer_cloud_seconds_than_cloud_only():
    settings = tune(slow_device(), fast_cloud(), TuneConfig([256, 1024], slo=Slo(ttft_s=1.0)))
    work = poisson_workload(0.5, 400, [256, 1024], 256, 1)
    pd = simulate_mode("pd", work, _fleet(settings))
    cloud_only = simulate_mode("cloud-only", work, _fleet(settings))
    assert pd.cloud_busy_s < cloud_only.cloud_busy_s / 2
    assert simulate_mode("device-only", work, _fleet(settings)).cloud_busy_s == 0.0


def test_cloud_slots_queue_requests_in_order():
    # Two requests at once on one slot: the second waits for the first to finish.
    run = simulate_cloud(np.zeros(2), np.array([100, 100]), np.array([11, 11]), fast_cloud(), 1)
    prefill = 0.01 + 0.05
    step = 0.015 + 0.005  # B = 1
    assert run.first_token_at[0] == pytest.approx(prefill)
    assert run.decode_end_at[0] == pytest.approx(prefill + 10 * step)
    assert run.first_token_at[1] == pytest.approx(2 * prefill + 10 * step)
    assert run.busy_s[0] == pytest.approx(prefill + 10 * step)


def test_display_keeps_stretching_cloud_tokens_through_the_absorb():
    """As in the client: decoding starts when the received tokens are absorbed, so the last
    cloud tokens are spread over the absorb instead of drained at Δmin before it (0.5 s gap)."""
    pacing = PacingConfig(min_interval_s=0.1, max_interval_s=0.3, decode_interval_s=0.1)
    arrivals = [0.5 + 0.02 * i for i in range(10)]  # all 10 cloud tokens in by 0.7 s
    result = run_display(pacing, arrivals, 300, prompt_done_s=3.0, absorb=lambda m: 0.5)
    assert result.handoff_index == 10
    assert result.own_shown_at == pytest.approx(3.5)
    assert result.handoff_gap_s <= 0.3 + 1e-9


def test_display_holds_tokens_back_when_the_cloud_is_slower_than_the_display():
    """A token every 0.25 s while the device's prompt ends at 3 s: the controller keeps a
    reserve for the absorb instead of showing each token as it comes (a 0.45 s gap before)."""
    pacing = PacingConfig(min_interval_s=0.1, max_interval_s=0.3, decode_interval_s=0.1)
    arrivals = [0.5 + 0.25 * i for i in range(20)]  # 11 of them before the prompt is done
    result = run_display(pacing, arrivals, 300, prompt_done_s=3.0, absorb=lambda m: 0.5)
    assert result.handoff_index == 11
    assert result.max_tpot_s <= 0.3 + 1e-9


def test_a_refining_prompt_prefills_its_scored_tail_even_when_cached_as_the_engine_does():
    # The engine takes a refining prompt's prefix from the cache but always prefills its last
    # W positions (their queries are scored): with every prompt cached but its last token, a
    # refining request pays W tokens after the cached rest, a plain one only its last token.
    from dataclasses import replace

    from cloud_server.scheduler import REFINE_WINDOW

    settings = tune(slow_device(), fast_cloud(), TuneConfig([1024], slo=Slo(ttft_s=1.0)))
    refining = settings.model_copy(
        update={"buckets": [b.model_copy(update={"refine_ratio": 0.5}) for b in settings.buckets]}
    )
    work = poisson_workload(0.01, 20, [1024], 256, 1)
    work = replace(work, cached_lens=work.prompt_lens - 1)
    plain = simulate_mode("pd", work, _fleet(settings))
    refined = simulate_mode("pd", work, _fleet(refining))
    cost = fast_cloud().prefill
    extra = cost.extend_time(REFINE_WINDOW, 1024 - REFINE_WINDOW) - cost.extend_time(1, 1023)
    assert extra > 0
    assert refined.cloud_busy_s - plain.cloud_busy_s == pytest.approx(extra, rel=0.05)
