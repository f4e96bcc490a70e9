from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from tuner_profiles import fast_cloud, slow_device

from benchmarks.planner.tuner import InfeasibleError, Slo, TuneConfig, tune
from benchmarks.planner.tuning_inputs import load_quality
from common.profiles import NetworkProfile
from common.settings import SplitSettings
from common.timing_model import PLAN_FACTOR, STRETCH_FACTOR, catch_up_time, cloud_busy_s, ttft_pd


def _tune(**kw) -> SplitSettings:
    cfg = TuneConfig(input_lens=kw.pop("input_lens", [64, 1024]), **kw)
    return tune(slow_device(), fast_cloud(), cfg)


def test_device_alone_for_short_prompts_cloud_for_long():
    settings = _tune(slo=Slo(ttft_s=1.0))
    short, long = settings.buckets
    assert not short.use_cloud and short.cloud_tokens == 0  # Tpd(64) = 0.66 s <= 1 s
    assert "device-only" in short.reason
    assert long.use_cloud and "TTFT target 1000 ms forces the cloud" in long.reason


def test_no_stall_binds_the_budget():
    settings = _tune(slo=Slo(ttft_s=1.0))
    long, pred = settings.buckets[1], settings.predictions[1]
    assert "no-stall binds" in long.reason
    t0 = ttft_pd(1024, fast_cloud(), NetworkProfile())
    tau_d = 0.25
    plan = PLAN_FACTOR * tau_d
    # Δmax leaves the controller room to stretch when the device runs late.
    assert long.max_interval_s == pytest.approx(STRETCH_FACTOR * tau_d)
    # N steps of Δplan must cover Tcatch + τd - TTFT (with 5% prefill safety and 1 margin token)
    catch = 1.05 * catch_up_time(1024, 0.0, long.cloud_tokens + 1, slow_device())
    assert long.cloud_tokens * plan >= catch + tau_d - t0
    shorter = long.cloud_tokens - 2
    catch = 1.05 * catch_up_time(1024, 0.0, shorter + 1, slow_device())
    assert shorter * plan < catch + tau_d - t0
    assert pred["handoff_index"] <= long.cloud_tokens + 1
    assert pred["cloud_busy_s"] < pred["cloud_only_busy_s"]


def test_jitter_adds_margin_tokens():
    slo = Slo(ttft_s=1.0, tpot_s=0.3)  # a fixed Δmax (without it Δmax = τd + jitter)
    calm = _tune(slo=slo).buckets[1]
    jittery = _tune(slo=slo, network=NetworkProfile(0.05, 0.6)).buckets[1]
    assert jittery.cloud_tokens > calm.cloud_tokens


def test_tpot_slo_below_device_rhythm_forces_cloud_only():
    bucket = _tune(slo=Slo(ttft_s=1.0, tpot_s=0.1), input_lens=[1024]).buckets[0]
    assert bucket.use_cloud and bucket.cloud_tokens == 255
    assert "cloud-only" in bucket.reason and "TPOT SLO 100 ms" in bucket.reason


def test_a_cloud_only_bucket_costs_what_cloud_only_costs():
    # The plan is the cloud answering all O tokens: its cost and the cloud-only baseline it is
    # compared with are the same request (they once differed by one token, O - 1 against O).
    pred = _tune(slo=Slo(ttft_s=1.0, tpot_s=0.1), input_lens=[1024]).predictions[0]
    assert pred["cloud_busy_s"] == pytest.approx(pred["cloud_only_busy_s"])
    assert pred["cloud_only_busy_s"] == pytest.approx(cloud_busy_s(1024, 256, fast_cloud()))


def test_infeasible_slos_name_the_constraint():
    with pytest.raises(InfeasibleError, match="infeasible ttft constraint") as err:
        _tune(slo=Slo(ttft_s=0.3))  # the cloud needs 0.57 s at 1024 tokens
    assert err.value.constraint == "ttft"
    with pytest.raises(InfeasibleError, match="infeasible tpot constraint"):
        _tune(slo=Slo(ttft_s=1.0, tpot_s=0.01))


def test_refine_ratio_stops_at_the_quality_floor(quality_file):
    quality = load_quality(quality_file)
    plain = _tune(slo=Slo(ttft_s=1.0)).buckets[1]
    assert plain.refine_ratio == 0 and "no refinement quality file" in plain.reason
    refined = _tune(slo=Slo(ttft_s=1.0), quality=quality, quality_floor=0.9).buckets[1]
    assert refined.refine_ratio == 0.5  # 0.75 measures 0.70 < 0.9
    assert refined.cloud_tokens < plain.cloud_tokens
    strict = _tune(slo=Slo(ttft_s=1.0), quality=quality, quality_floor=0.99).buckets[1]
    assert strict.refine_ratio == 0 and "meets quality floor" in strict.reason


def test_settings_file_validates_against_the_schema(tmp_path):
    settings = _tune(input_lens=[64, 512, 1024])
    path = tmp_path / "settings.json"
    settings.save(path)
    loaded = SplitSettings.load(path)
    assert [b.max_prompt_len for b in loaded.buckets] == [64, 512, 1024]
    assert loaded.bucket_for(700).max_prompt_len == 1024
    assert len(loaded.predictions) == 3
    assert {"handoff_index", "ttft_s", "cloud_busy_s"} <= set(loaded.predictions[2])
    assert loaded.tuner["device_profile"]["meta"]["name"] == "slow"
    raw = json.loads(path.read_text())
    del raw["predictions"][0]["ttft_s"]
    with pytest.raises(ValidationError, match="ttft_s"):  # predictions are typed, not free-form
        SplitSettings.model_validate(raw)
