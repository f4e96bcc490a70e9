"""Shipped profiles and traces, and what the fleet simulator must get right (issue 15)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from tuner_profiles import fast_cloud, slow_device
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.planner.profiles import (
    check_prompt_lens,
    load_named,
    profile_path,
    shipped_profiles,
    shipped_settings,
)
from benchmarks.planner.profiles.derive import derived_profiles
from benchmarks.planner.sim_fleet import Fleet, simulate_mode
from benchmarks.planner.sim_workload import (
    SHIPPED_TRACES,
    cached_prefix_lens,
    poisson_workload,
    session_cached_lens,
    trace_workload,
)
from benchmarks.planner.simulator import gain_of
from benchmarks.planner.tuner import Slo, TuneConfig, tune
from common.profiles import NetworkProfile, ProfileError, profile_to_dict
from common.settings import SplitSettings

runner = CliRunner()


def test_every_shipped_profile_loads_by_name_and_says_where_it_comes_from():
    entries = shipped_profiles()
    assert {"cpu-cloud", "cpu-device-x1", "cpu-device-x4", "h100-llama8b"} <= {
        e.name for e in entries
    }
    for entry in entries:
        profile = load_named(entry.name, entry.kind)
        assert entry.source in ("measured", "derived")
        if entry.source == "derived":
            assert profile.meta["derived_from"]["row"] and profile.meta["assumptions"]
    assert shipped_settings(), "example settings ship beside the profiles"


def test_the_derived_files_are_what_derive_py_computes():
    for profile in derived_profiles():
        shipped = json.loads(profile_path(profile.meta["name"]).read_text())
        assert shipped == json.loads(json.dumps(profile_to_dict(profile))), profile.meta["name"]


def test_a_profile_refuses_prompts_far_past_what_it_covers():
    phone = load_named("phone-llama1b-q4", "device")
    assert check_prompt_lens(phone, 2048) == ""
    assert "extrapolated" in check_prompt_lens(phone, 6000)
    with pytest.raises(ProfileError, match="valid only up to 8192"):
        check_prompt_lens(phone, 85_000)
    cpu = load_named("cpu-cloud", "cloud")  # measured up to 2048: usable to 2x that
    with pytest.raises(ProfileError, match="--max-input-len"):
        check_prompt_lens(cpu, 8000)


def test_a_trace_replay_keeps_the_trace_lengths_unless_told():
    work = trace_workload(SHIPPED_TRACES["mooncake-5min"], None, 2, max_input_len=8192)
    rows = [json.loads(line) for line in SHIPPED_TRACES["mooncake-5min"].read_text().splitlines()]
    kept = [r for r in rows if r["input_length"] <= 8192]
    assert work.output_lens.tolist() == [r["output_length"] for r in kept]
    assert work.dropped == len(rows) - len(kept)
    assert work.arrivals[0] == 0.0 and work.arrivals[-1] == pytest.approx(
        (kept[-1]["timestamp"] - rows[0]["timestamp"]) / 1e3
    )
    forced = trace_workload(SHIPPED_TRACES["small"], None, 1, output_len=99)
    assert set(forced.output_lens.tolist()) == {99}


def test_a_shared_leading_block_is_cached_only_after_it_was_seen():
    from benchmarks.bench.workloads import TraceRequest

    reqs = [
        TraceRequest(0.0, 1500, 10, (0, 1, 2)),
        TraceRequest(1.0, 1600, 10, (0, 1, 7, 8)),  # shares blocks 0, 1
        TraceRequest(2.0, 600, 10, (5, 1)),  # block 1 under another first block: no hit
    ]
    assert cached_prefix_lens(reqs) == [0, 1024, 0]


def _fleet(settings, slots=8, ttft=10.0, tpot=0.4) -> Fleet:
    return Fleet([settings], [slow_device()], fast_cloud(), NetworkProfile(), slots, ttft, tpot)


def test_the_handoff_stops_the_cloud_before_its_budget():
    # A budget of 200 tokens, while the device's 256-token prompt is done in ~2.6 s and the
    # cloud streams a token every ~20 ms: it hands off after ~130 and the cloud stops there.
    settings = tune(slow_device(), fast_cloud(), TuneConfig([256], 512, slo=Slo(ttft_s=1.0)))
    bucket = settings.buckets[0].model_copy(update={"cloud_tokens": 200})
    wide = SplitSettings(buckets=[bucket])
    work = poisson_workload(0.01, 20, [256], 512, 1)
    res = simulate_mode("pd", work, _fleet(wide))
    assert 100 < res.cloud_tokens < 160
    # Past the m tokens shown, the cloud decodes while the handoff is on the wire (tokens sent
    # within one RTT of it: 50 ms at >= 20 ms a step) and the step in flight when it arrives.
    step = fast_cloud().batch.e0 + fast_cloud().batch.e1
    extra = NetworkProfile().rtt_s / step + 1
    assert res.mean_handoff + 1 <= res.cloud_tokens <= res.mean_handoff + extra + 1


def test_pd_meets_the_slo_only_with_the_clouds_first_token():
    # One slot and a burst: most requests wait so long that the device's own prefill shows the
    # first token. Their TTFT is within the SLO, but that is not what pd promises.
    settings = tune(slow_device(), fast_cloud(), TuneConfig([1024], slo=Slo(ttft_s=1.0)))
    work = poisson_workload(50.0, 200, [1024], 256, 1)
    res = simulate_mode("pd", work, _fleet(settings, slots=1, ttft=60.0, tpot=10.0))
    within = (res.ttft <= 60.0) & (res.max_tpot_s <= 10.0)
    assert within.mean() > 0.9
    assert res.attainment < 0.5


def test_a_meaningless_gain_is_never_printed():
    rows = [{"max_rate_under_slo": 0.0}, {}, {"max_rate_under_slo": 3.0}]
    assert gain_of(rows)[0] is None
    rows = [{"max_rate_under_slo": 2.0}, {}, {"max_rate_under_slo": None}]
    assert gain_of(rows) == (None, pytest.approx(gain_of(rows)[1]))
    assert gain_of([{"max_rate_under_slo": 2.0}, {}, {"max_rate_under_slo": 5.0}])[0] == 2.5


def test_a_budget_that_covers_the_answer_leaves_it_to_the_cloud():
    # A device so slow it never catches up within 64 tokens: the tuner says cloud-only.
    settings = tune(slow_device(), fast_cloud(), TuneConfig([1000], 32, slo=Slo(ttft_s=1.0)))
    assert not settings.buckets[0].use_device
    res = simulate_mode("pd", poisson_workload(0.05, 50, [1000], 32, 1), _fleet(settings))
    assert res.share_cloud_only == 1.0 and res.stall_rate == 0.0


def test_simulate_replays_a_shipped_trace_end_to_end(tmp_path):
    report = tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "simulate",
            "--trace",
            "small",
            "--device-profiles",
            "phone-llama1b-q4,phone-llama3b-q4",
            "--cloud-profile",
            "h100-llama8b",
            "--slo",
            "ttft:1000,tpot:100",
            "--search-requests",
            "200",
            "--search-sample",
            "50",
            "--rates",
            "1,4",
            "-o",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "inf" not in result.output
    data = json.loads(report.read_text())
    assert [m["mode"] for m in data["modes"]] == ["cloud-only", "device-only", "pd"]
    assert len(data["rates"]) == 4
    assert all(0.0 <= r["slo_attainment"] <= 1.0 for r in data["rates"])


def test_simulate_refuses_a_trace_past_the_profiles_range():
    result = runner.invoke(app, ["simulate", "--trace", "mooncake-5min", "--num-requests", "50"])
    assert result.exit_code == 2
    assert "--max-input-len" in result.output


def test_profile_list_names_every_shipped_profile_with_its_source():
    result = runner.invoke(app, ["profile", "list"])
    assert result.exit_code == 0, result.output
    for entry in shipped_profiles():
        assert entry.name in result.output
    assert "derived" in result.output and "measured" in result.output


def test_tune_takes_shipped_names(tmp_path):
    out = tmp_path / "s.json"
    result = runner.invoke(
        app,
        ["tune", "--device-profile", "phone-llama1b-q4", "--cloud-profile", "h100-llama8b"]
        + ["--input-lens", "256,1024", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert len(SplitSettings.load(out).buckets) == 2
    assert np.isfinite([b.cloud_tokens for b in SplitSettings.load(out).buckets]).all()


def test_a_tpot_slo_sizes_n_for_the_gaps_it_allows_without_stalling():
    # Δmax = the SLO (0.6 s) instead of 1.5 τd: the tuner sizes N at that gap less 0.3 τd, so
    # fewer cloud tokens cover the same prefill, and the display still never stalls.
    plain = tune(slow_device(), fast_cloud(), TuneConfig([1024], slo=Slo(ttft_s=1.0)))
    slo = tune(slow_device(), fast_cloud(), TuneConfig([1024], slo=Slo(ttft_s=1.0, tpot_s=0.6)))
    assert slo.buckets[0].cloud_tokens < plain.buckets[0].cloud_tokens
    work = poisson_workload(0.01, 50, [1024], 256, 1)
    res = simulate_mode("pd", work, _fleet(slo, tpot=0.6))
    assert res.stall_rate == 0.0 and res.attainment == 1.0


def test_shipped_settings_and_trace_names_work_in_simulate_and_tune(tmp_path):
    result = runner.invoke(
        app,
        ["simulate", "--settings", "cpu-x4", "--request-rate", "0.05", "--num-requests", "200"]
        + ["--search-requests", "100", "--search-sample", "20"],
    )
    assert result.exit_code == 0, result.output
    assert "settings cpu-x4" in result.output
    out = tmp_path / "s.json"
    args = ["tune", "--device-profile", "phone-llama1b-q4", "--cloud-profile", "h100-llama8b"]
    result = runner.invoke(app, [*args, "--trace", "small", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert SplitSettings.load(out).tuner["output_len"] == 64  # the trace's median answer
    result = runner.invoke(app, [*args, "--trace", "mooncake-5min", "-o", str(out)])
    assert result.exit_code == 2 and "valid only up to 8192" in result.output


def test_a_short_burst_does_not_pass_for_a_sustained_rate():
    # One slot, 0.26 s of cloud per request: at most ~3.8 req/s. Twenty requests at 100 req/s
    # drain in ~5 s, inside a 10 s TTFT SLO; the rate probe lasts 30 SLOs, so they do not pass.
    from benchmarks.planner.sim_fleet import max_rate

    settings = tune(slow_device(), fast_cloud(), TuneConfig([100], 11, slo=Slo(ttft_s=1.0)))
    work = poisson_workload(1.0, 20, [100], 11, 1)
    rate = max_rate("cloud-only", work, _fleet(settings, slots=1, ttft=10.0, tpot=1.0), 20)
    assert 2.5 < rate < 4.0


def test_a_sampled_pd_display_counts_for_all_pd_requests():
    # Half the requests are device-only (short prompts), half pd; sampling 10 pd displays must
    # not shrink pd's weight in the attainment to 10 / (10 + device-only).
    settings = tune(slow_device(), fast_cloud(), TuneConfig([1, 1024], slo=Slo(ttft_s=1.0)))
    work = poisson_workload(0.01, 400, [1, 1024], 256, 1)
    fleet = _fleet(settings, ttft=0.1)  # met by the device-only 1-token prompts, not by pd
    full = simulate_mode("pd", work, fleet)
    sampled = simulate_mode("pd", work, fleet, sample=10)
    assert full.attainment == pytest.approx(0.5, abs=0.08)
    assert sampled.attainment == pytest.approx(full.attainment, abs=0.02)


def test_a_follow_up_finds_its_previous_turn_in_the_device_session():
    from benchmarks.bench.workloads import TraceRequest

    reqs = [
        TraceRequest(0.0, 1500, 100, (0, 1, 2)),  # a conversation's first turn
        TraceRequest(1.0, 600, 10, (0, 9)),  # another user: shares only the system block
        TraceRequest(2.0, 1900, 10, (0, 1, 3, 4)),  # turn 2: extends turn 1's full blocks 0, 1
        TraceRequest(3.0, 2600, 10, (0, 1, 3, 4, 5, 6)),  # turn 3: extends turn 2 (0, 1, 3)
        TraceRequest(4.0, 3000, 10, (0, 1, 7, 8, 9, 10)),  # a branch off turn 1 after turn 2
    ]
    cached, previous = session_cached_lens(reqs)
    assert previous == [None, None, 0, 2, None]
    # Turn 2 shares 2 blocks (1,024 tokens) with turn 1, which held 1,500 + 100: 1,024.
    # Turn 3 shares 4 blocks (2,048) with turn 2, which held only 1,900 + 10.
    assert cached == [0, 0, 1024, 1910, 0]


def test_simulate_replays_a_trace_with_prefix_reuse_and_device_sessions(tmp_path):
    trace = tmp_path / "chat.jsonl"
    turns = [  # two conversations of three turns, interleaved, and a one-off request
        (0, 700, 64, [0, 1]),
        (500, 900, 64, [0, 2]),
        (2000, 1300, 64, [0, 1, 3]),
        (2500, 1400, 64, [0, 2, 4]),
        (4000, 1800, 64, [0, 1, 3, 5]),
        (4500, 2000, 64, [0, 2, 4, 6]),
        (6000, 300, 64, [7]),
    ]
    trace.write_text(
        "".join(
            json.dumps({"timestamp": t, "input_length": L, "output_length": o, "hash_ids": h})
            + "\n"
            for t, L, o, h in turns
        )
    )
    work = trace_workload(trace, None, 2, prefix_cache=True, sessions=True)
    # Each later turn holds its previous turn's prompt and answer (L + 64), within the blocks
    # shared; the second conversation's first turn shares only the system block 0: no session.
    assert work.device_cached.tolist() == [0, 0, 764, 964, 1364, 1464, 0]
    assert work.device_idx[2] == work.device_idx[4] == work.device_idx[0]  # one device each
    assert work.cached_lens.tolist() == [0, 512, 1024, 1024, 1536, 1536, 0]
    args = ["simulate", "--trace", str(trace), "--device-profiles", "phone-llama1b-q4"]
    args += ["--cloud-profile", "h100-llama8b", "--slo", "ttft:2000,tpot:100"]
    args += ["--search-requests", "200", "--search-sample", "50"]
    reports = {}
    for name, extra in (("plain", []), ("reuse", ["--prefix-cache", "--sessions"])):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(app, [*args, *extra, "-o", str(out)])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(out.read_text())
    assert "device sessions (57% follow-ups" in result.output
    plain, reuse = (reports[k]["modes"] for k in ("plain", "reuse"))
    # The cloud's prefix cache saves cloud-only prefill; sessions save pd's device prefill.
    assert reuse[0]["cloud_busy_s_per_request"] < plain[0]["cloud_busy_s_per_request"]
    assert reuse[2]["cloud_busy_s_per_request"] <= plain[2]["cloud_busy_s_per_request"]


@pytest.mark.parametrize("cloud", ["h100-llama8b", "ascend-qwen7b"])
def test_tuned_settings_cost_less_cloud_time_than_any_fixed_n_as_smooth(cloud):
    # The fleet study's "tuned, not fixed" criterion on its 1B-phone chat row, small: every
    # fixed N that stalls no more than the tuned settings costs more cloud seconds per request.
    from benchmarks.planner.simulator import chunk_tokens, tuned_settings
    from benchmarks.studies.fleet import FIXED_NS, SLOTS, _fixed

    devices, cld = [load_named("phone-llama1b-q4", "device")], load_named(cloud, "cloud")
    net = NetworkProfile(0.05, 0.01)
    rate = {"h100-llama8b": 4.0, "ascend-qwen7b": 0.4}[cloud]  # about half cloud-only's limit
    work = poisson_workload(rate, 400, [128, 256, 512], 1024, 1)
    tuned = tuned_settings(devices, cld, work, net, Slo(2.0, 0.1), slots=SLOTS)
    fleet = Fleet(tuned, devices, cld, net, SLOTS, 2.0, 0.1, 90.0, chunk_tokens(None, tuned))
    res = simulate_mode("pd", work, fleet, 150)
    assert res.stall_rate == 0.0 and res.attainment == 1.0
    for n in FIXED_NS:
        fixed = simulate_mode("pd", work, replace(fleet, settings=_fixed(tuned, n)), 150)
        if fixed.stall_rate <= res.stall_rate:
            assert res.cloud_busy_s < fixed.cloud_busy_s, f"fixed N={n} is as smooth and cheaper"


def test_simulate_runs_closed_loop_devices_as_the_live_bench_does(tmp_path):
    # `pdd bench --virtual-devices M` is a closed loop; the simulator reports the same figures.
    report = tmp_path / "report.json"
    args = ["simulate", "--request-rate", "0.05", "--num-requests", "200"]
    args += ["--search-requests", "100", "--search-sample", "20", "-o", str(report)]
    result = runner.invoke(app, args + ["--closed-loop-devices", "1,4"])
    assert result.exit_code == 0, result.output
    rows = {(r["devices"], r["mode"]): r for r in json.loads(report.read_text())["closed_loop"]}
    assert sorted(rows) == [(1, "cloud-only"), (1, "pd"), (4, "cloud-only"), (4, "pd")]
    for mode in ("cloud-only", "pd"):  # more devices in the loop load the cloud more
        assert rows[4, mode]["sustained_rate"] > rows[1, mode]["sustained_rate"]
    for m in (1, 4):  # pd holds a slot for the first token and N more, not the whole answer
        pd, co = rows[m, "pd"], rows[m, "cloud-only"]
        assert pd["cloud_slot_s_per_request"] < co["cloud_slot_s_per_request"]
    assert "4 devices pd" in result.output
    bad = runner.invoke(app, args + ["--closed-loop-devices", "0"])
    assert bad.exit_code == 2 and "--closed-loop-devices must be >= 1" in bad.output
