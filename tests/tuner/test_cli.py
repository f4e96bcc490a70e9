from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from benchmarks.cli import app
from common.profiles import load_profile
from common.settings import SplitSettings

runner = CliRunner()


def _tune(dev, cloud, out, *extra):
    args = ["tune", "--device-profile", str(dev), "--cloud-profile", str(cloud), "-o", str(out)]
    return runner.invoke(app, [*args, *extra])


def test_tune_writes_valid_settings(profile_files, tmp_path):
    out = tmp_path / "settings.json"
    result = _tune(*profile_files, out, "--input-lens", "64,1024", "--slo", "ttft:1000")
    assert result.exit_code == 0, result.output
    assert "no-stall binds" in result.output
    saved = SplitSettings.load(out)
    assert saved.buckets[0].use_cloud is False
    # the command line is saved with the settings, as its config
    assert saved.tuner["options"]["input_lens"] == "64,1024"
    assert saved.tuner["options"]["slo"] == "ttft:1000" and saved.tuner["options"]["rtt_ms"] == 50


def test_tune_needs_both_profiles_and_the_output(profile_files, tmp_path):
    result = runner.invoke(app, ["tune", "--device-profile", str(profile_files[0])])
    assert result.exit_code == 2 and "Missing option" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("[1, 2", "not readable JSON"),
        ('{"kind": "cloud"}', "expected a device profile"),
    ],
)
def test_bad_profile_is_a_clean_error(profile_files, tmp_path, content, message):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    result = _tune(bad, profile_files[1], tmp_path / "s.json")
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_infeasible_slo_names_the_constraint(profile_files, tmp_path):
    result = _tune(*profile_files, tmp_path / "s.json", "--slo", "ttft:100")
    assert result.exit_code == 2
    assert "infeasible ttft constraint" in result.output


def test_bad_slo_and_quality_file_are_clean_errors(profile_files, tmp_path):
    assert "--slo" in _tune(*profile_files, tmp_path / "s.json", "--slo", "ttft=1").output
    bad = tmp_path / "q.json"
    bad.write_text(json.dumps([{"ratio": 0.5}]))
    result = _tune(
        *profile_files, tmp_path / "s.json", "--quality-file", str(bad), "--quality-floor", "0.9"
    )
    assert result.exit_code == 2 and "expected the refine_quality result" in result.output


def test_simulate_reports_the_gain(profile_files, tmp_path):
    settings = tmp_path / "settings.json"
    assert (
        _tune(*profile_files, settings, "--input-lens", "256,1024", "--slo", "ttft:1000").exit_code
        == 0
    )
    dev, cloud = profile_files
    args = ["simulate", "--settings", str(settings), "--device-profiles", f"{dev},{dev}"]
    args += ["--cloud-profile", str(cloud), "--request-rate", "0.5", "--num-requests", "300"]
    args += ["--search-requests", "300", "--search-sample", "50", "-o", str(tmp_path / "r.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["gain"] > 1.0
    assert [m["mode"] for m in report["modes"]] == ["cloud-only", "device-only", "pd"]
    assert report["options"]["num_requests"] == 300 and report["options"]["cloud_slots"] == 8


@pytest.mark.parametrize(
    ("flag", "value"), [("--cloud-slots", "0"), ("--num-requests", "9"), ("--display-sample", "-1")]
)
def test_simulate_refuses_out_of_range_options(flag, value):
    result = runner.invoke(app, ["simulate", flag, value])
    assert result.exit_code == 2 and f"{flag} must be >=" in result.output


def test_profile_refuses_bad_lengths_before_loading_the_model(tmp_path):
    args = ["profile", "cloud", "-o", str(tmp_path / "c.json"), "--lengths", "64"]
    result = runner.invoke(app, args)
    assert (
        result.exit_code == 2 and "--lengths needs at least two positive lengths" in result.output
    )
    assert not (tmp_path / "c.json").exists()


def test_simulate_rejects_a_missing_profile(tmp_path, profile_files):
    args = ["simulate", "--settings", str(tmp_path / "none.json"), "--device-profiles", "x.json"]
    result = runner.invoke(
        app, [*args, "--cloud-profile", str(profile_files[1]), "--request-rate", "1"]
    )
    assert result.exit_code == 2 and "error:" in result.output


@pytest.mark.slow
def test_profile_smoke_run_with_the_real_model(tmp_path):
    out = tmp_path / "device.json"
    args = ["profile", "device", "--lengths", "8,16,24", "--repeats", "1", "--device-slowdown", "2"]
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    profile = load_profile(out, "device")
    assert profile.meta["slowdown"] == 2.0 and profile.meta["threads"] == 1
    assert profile.meta["options"]["lengths"] == [8, 16, 24]  # its command line, saved
    assert [r["length"] for r in profile.measurements["prefill"]] == [8, 16, 24]
    assert profile.prefill.time(16) > 0 and profile.decode.d0 > 0
