"""A cloud engine that cannot score prompts (vLLM): the tuner plans rho = 0 and the settings say so."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError
from tuner_profiles import fast_cloud, slow_device
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.planner.tuner import Slo, TuneConfig, tune
from benchmarks.planner.tuning_inputs import load_quality
from common.profiles import save_profile
from common.settings import Bucket, SplitSettings


def test_a_cloud_that_cannot_score_gets_no_refinement(quality_file):
    quality = load_quality(quality_file)
    cfg = TuneConfig(input_lens=[64, 1024], slo=Slo(ttft_s=1.0), quality=quality, quality_floor=0.9)
    scoring = tune(slow_device(), fast_cloud(), cfg)
    assert scoring.cloud_can_score and scoring.buckets[1].refine_ratio == 0.5
    plain = tune(slow_device(), fast_cloud(), dataclasses.replace(cfg, cloud_can_score=False))
    assert not plain.cloud_can_score and plain.tuner["cloud_can_score"] is False
    assert all(b.refine_ratio == 0 for b in plain.buckets)
    assert "cannot score prompts" in plain.buckets[1].reason
    assert plain.buckets[1].cloud_tokens > scoring.buckets[1].cloud_tokens  # no shorter catch-up


def test_settings_refuse_refinement_on_a_cloud_that_cannot_score():
    bucket = Bucket(max_prompt_len=512, cloud_tokens=8, refine_ratio=0.5, min_interval_s=0.0,
                    max_interval_s=0.2)  # fmt: skip
    assert SplitSettings(buckets=[bucket]).cloud_can_score  # the default: additive field
    with pytest.raises(ValidationError, match="refine_ratio 0.5 but cloud_can_score is false"):
        SplitSettings(buckets=[bucket], cloud_can_score=False)
    SplitSettings(buckets=[bucket.model_copy(update={"refine_ratio": 0.0})], cloud_can_score=False)


@pytest.mark.parametrize(("extra", "can_score"), [((), True), (("--cloud-engine", "vllm"), False)])
def test_pdd_tune_cloud_engine(tmp_path, quality_file, extra, can_score):
    dev, cloud, out = tmp_path / "d.json", tmp_path / "c.json", tmp_path / "s.json"
    save_profile(slow_device(), dev)
    save_profile(fast_cloud(), cloud)
    args = ["tune", "--device-profile", str(dev), "--cloud-profile", str(cloud), "-o", str(out)]
    args += ["--input-lens", "64,1024", "--slo", "ttft:1000", "--quality-file", str(quality_file)]
    result = CliRunner().invoke(app, [*args, "--quality-floor", "0.9", *extra])
    assert result.exit_code == 0, result.output
    settings = SplitSettings.load(out)
    assert settings.cloud_can_score is can_score
    assert (settings.buckets[1].refine_ratio > 0) is can_score


def test_a_profile_measured_on_a_vllm_cloud_says_it_cannot_score(tmp_path):
    dev, cloud, out = tmp_path / "d.json", tmp_path / "c.json", tmp_path / "s.json"
    save_profile(slow_device(), dev)
    profile = fast_cloud()
    save_profile(
        dataclasses.replace(profile, meta={**profile.meta, "can_score_prompts": False}), cloud
    )
    args = ["tune", "--device-profile", str(dev), "--cloud-profile", str(cloud), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--input-lens", "1024"])
    assert result.exit_code == 0, result.output
    assert SplitSettings.load(out).cloud_can_score is False
    bad = CliRunner().invoke(app, [*args, "--cloud-engine", "sglang"])
    assert bad.exit_code == 2 and "choose builtin or vllm" in bad.output
