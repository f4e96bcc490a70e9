"""tuner_check: pd medians and stall rates from bench results, beside the tuner's predictions."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.planner import tuner_check
from common.settings import Bucket, SplitSettings

DELTA_MAX = 0.2  # s: a gap above 1.5 x this is a stall


def _settings() -> SplitSettings:
    bucket = Bucket(
        max_prompt_len=1024, cloud_tokens=32, min_interval_s=0.1, max_interval_s=DELTA_MAX
    )
    return SplitSettings(buckets=[bucket])


def _request(mode: str, max_tpot_s: float, busy_s: float, handoff: int | None = 20) -> dict:
    return {
        "mode": mode,
        "input_len": 512,
        "handoff_index": handoff,
        "num_tokens": 64,
        "ttft_ms": 1000.0,
        "cloud_busy_s": busy_s,
        "max_tpot_ms": 1e3 * max_tpot_s,
    }


def test_measured_counts_stalls_against_the_buckets_delta_max():
    result = {
        "requests": [
            _request("pd", 0.29, 1.0),  # just under 1.5 x Δmax: smooth
            _request("pd", 0.31, 2.0),  # just over: a stall
            _request("pd", 0.25, 3.0, handoff=None),  # the cloud gave the whole answer
            _request("cloud", 5.0, 9.0),  # other modes are not pd's
            {**_request("pd", 9.0, 9.0), "error": "boom"},  # failed requests are left out
        ]
    }
    got = tuner_check.measured(result, _settings())[512]
    assert got["stall_rate"] == 1 / 3
    assert got["cloud_busy_s"] == 2.0
    assert got["handoff_index"] == 20  # median of 20, 20 and 64 (no handoff: the whole answer)
    assert got["max_tpot_s"] == 0.29


def test_cli_prints_predictions_and_the_comparison(tmp_path):
    settings_path = tmp_path / "settings.json"
    raw = _settings().model_dump(mode="json")
    raw["predictions"] = [
        {
            "max_prompt_len": 1024,
            "handoff_index": 20,
            "ttft_s": 1.5,
            "max_tpot_s": 0.2,
            "cloud_busy_s": 1.0,
            "cloud_only_busy_s": 3.0,
        }
    ]
    settings_path.write_text(json.dumps(raw))
    tuned, fixed = tmp_path / "tuned.json", tmp_path / "fixed.json"
    tuned.write_text(json.dumps({"requests": [_request("pd", 0.2, 1.0)]}))
    fixed.write_text(json.dumps({"requests": [_request("pd", 0.9, 0.5)]}))
    args = ["--settings", str(settings_path), "--tuned", str(tuned), "--fixed", f"N16={fixed}"]
    result = CliRunner().invoke(app, ["tuner-check", *args])
    assert result.exit_code == 0, result.output
    assert "+50%" in result.output  # TTFT predicted 1.5 s against 1.0 s measured
    assert "1.00 / 100% / 0.90 / 0.50" in result.output  # N16: a stall in every answer


def test_cli_names_a_missing_result_file(tmp_path):
    settings_path = tmp_path / "settings.json"
    _settings().save(settings_path)
    args = ["--settings", str(settings_path), "--tuned", str(tmp_path / "nope.json")]
    result = CliRunner().invoke(app, ["tuner-check", *args])
    assert result.exit_code == 2
    assert "nope.json" in result.output
