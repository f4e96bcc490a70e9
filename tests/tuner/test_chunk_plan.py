"""The tuner's cloud-side setting: a prefill chunk that keeps the cloud's streams within Δmax
under load (``benchmarks/planner/chunk_plan.py``), and the stalls it removes in the simulator."""

from __future__ import annotations

import pytest
from tuner_profiles import slow_device

from benchmarks.planner.chunk_plan import loaded_token_interval, recommend_chunk
from benchmarks.planner.profiles import load_named
from benchmarks.planner.sim_fleet import Fleet, simulate_mode
from benchmarks.planner.sim_workload import poisson_workload
from benchmarks.planner.simulator import chunk_tokens, tuned_settings
from benchmarks.planner.tuner import Slo, TuneConfig, tune
from cloud_server.config import EngineConfig
from common.profiles import BatchCost, CloudProfile, DecodeCost, NetworkProfile, PrefillCost
from common.settings import Bucket, SplitSettings

# Prefill 10 ms/token (no fixed part, no attention term), decode round s(B) = 0.1 + 0.1·B s.
CLOUD = CloudProfile(PrefillCost(a=0.0, b=0.01), DecodeCost(d0=0.2), BatchCost(e0=0.1, e1=0.1))


def test_the_chunk_is_the_largest_whose_pause_fits_the_pacing_cap():
    # K = 2: a decode round takes 0.3 s, so 0.5 s are left for the chunk: 50 tokens.
    rec = recommend_chunk(CLOUD, slots=2, longest=200, max_interval_s=0.8)
    assert rec["prefill_chunk_tokens"] == 50
    assert rec["loaded_token_interval_s"] == pytest.approx(0.8)
    assert loaded_token_interval(CLOUD, 2, 51, 200) > 0.8
    # The whole longest prompt fits: no need to cut it finer.
    assert recommend_chunk(CLOUD, 2, 200, 5.0)["prefill_chunk_tokens"] == 200
    # The loaded decode round alone is past Δmax: no chunk helps, and it says so.
    none = recommend_chunk(CLOUD, 2, 200, 0.25)
    assert none["prefill_chunk_tokens"] is None
    assert "at any chunk size" in none["reason"]


def test_a_chunk_deep_in_a_long_prompt_costs_its_attention_too():
    # With the quadratic term the last chunk of the longest prompt is the dearest: it binds.
    cloud = CloudProfile(
        PrefillCost(a=0.0, b=0.01, c=1e-5), DecodeCost(d0=0.2), BatchCost(e0=0.1, e1=0.1)
    )
    chunk = recommend_chunk(cloud, 2, 1000, 0.8)["prefill_chunk_tokens"]
    assert loaded_token_interval(cloud, 2, chunk, 1000) <= 0.8
    assert loaded_token_interval(cloud, 2, chunk + 1, 1000) > 0.8
    assert chunk < 50  # the linear part alone would allow 50


def test_tune_recommends_the_chunk_for_the_tightest_cloud_bucket():
    cfg = TuneConfig([256, 1024], 128, NetworkProfile(0.05, 0.0), cloud_slots=2)
    settings = tune(slow_device(), CLOUD, cfg)
    cap = min(b.max_interval_s for b in settings.buckets if b.use_cloud)
    rec = settings.tuner["cloud"]
    assert rec == recommend_chunk(CLOUD, 2, 1024, cap)
    assert rec["prefill_chunk_tokens"] == round((cap - 0.3) / 0.01 - 0.5)
    # Every bucket on the device alone: nothing to recommend for the cloud.
    alone = tune(slow_device(), CLOUD, TuneConfig([16], 128, cloud_slots=2))
    assert alone.tuner["cloud"] is None


def test_simulate_takes_the_tuners_chunk_unless_given():
    bucket = Bucket(
        max_prompt_len=256, use_cloud=True, cloud_tokens=8, min_interval_s=0.2, max_interval_s=0.3
    )

    def with_chunk(c):
        return SplitSettings(buckets=[bucket], tuner={"cloud": {"prefill_chunk_tokens": c}})

    assert chunk_tokens(None, [with_chunk(96), with_chunk(63)]) == 63
    assert chunk_tokens(0, [with_chunk(63)]) == 0  # as given: whole prompts
    assert (
        chunk_tokens(None, [SplitSettings(buckets=[bucket])]) == EngineConfig.prefill_chunk_tokens
    )


def test_the_tuners_chunk_removes_the_stalls_of_a_loaded_cpu_cloud():
    # The README's case: this CPU's profiles, K = 8, prompts arriving at 60% of what the cloud
    # can prefill (the load, not a rate, so a re-measured profile keeps the case). With
    # 512-token chunks a pd stream gets one token per decode round + chunk (~1.5 s) while
    # others prefill, and its display runs dry before the handoff; the tuner's chunk keeps
    # that within Δmax.
    dev, cloud = load_named("cpu-device-x4", "device"), load_named("cpu-cloud", "cloud")
    net = NetworkProfile(0.05, 0.01)
    rate = 0.6 / cloud.prefill.time(597)  # 597: the mean of the three prompt lengths
    work = poisson_workload(rate, 400, [256, 512, 1024], 256, 1)
    split = tuned_settings([dev], cloud, work, net, Slo(), slots=8)
    chunk = chunk_tokens(None, split)
    assert 32 <= chunk <= 256

    def stalls(c: int) -> float:
        fleet = Fleet(split, [dev], cloud, net, 8, 12.0, 0.9, prefill_chunk_tokens=c)
        return simulate_mode("pd", work, fleet).stall_rate

    assert stalls(512) > 0.05
    assert stalls(chunk) == 0.0
