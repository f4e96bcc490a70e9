"""Metric formulas on hand-made answers: TPOT, ITL, max gap, percentiles, goodput, targets."""

from __future__ import annotations

import pytest

from benchmarks.bench.metrics import (
    RequestRecord,
    busy_duration_s,
    cloud_throughput_gain,
    meets_slo,
    parse_goodput,
    percentile,
    record_from_result,
    summarize,
)
from benchmarks.bench.report import check_targets
from device_client.types import DisplayedToken, GenerationResult, Mode


def make_result(times: list[float], sources: list[str] | None = None, **kw) -> GenerationResult:
    sources = sources or ["device"] * len(times)
    tokens = [
        DisplayedToken(i, 100 + i, "x", s, t)
        for i, (t, s) in enumerate(zip(times, sources, strict=True))
    ]
    fields = dict(
        mode=Mode.PD,
        prompt_tokens=64,
        kept_prompt_tokens=64,
        handoff_index=None,
        cloud_tokens=0,
        cloud_busy_s=None,
        fallback=None,
        end_reason="max_tokens",
    )
    fields.update(kw)
    return GenerationResult(tokens=tokens, **fields)


def record(times, mode="pd", start=0.0, **kw) -> RequestRecord:
    return record_from_result(0, mode, len(times), start, make_result(times, **kw))


def test_per_request_formulas_follow_vllm():
    r = record([0.5, 0.6, 0.9, 1.0, 1.7])
    assert r.ttft_s == 0.5
    assert r.e2e_s == 1.7
    assert r.tpot_s == pytest.approx((1.7 - 0.5) / 4)  # (E2E - TTFT) / (n - 1)
    assert r.itl_s == pytest.approx([0.1, 0.3, 0.1, 0.7])
    assert r.max_tpot_s == pytest.approx(0.7)


def test_one_token_answer_has_no_tpot():
    r = record([0.3])
    assert r.tpot_s is None and r.max_tpot_s is None and r.itl_s == []


def test_percentile_interpolates_linearly():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile([], 99) is None


def test_summary_keys_and_values_in_ms():
    records = [record([0.1, 0.2, 0.3]), record([0.3, 0.5, 0.7], start=1.0)]
    s = summarize(records, {})
    assert s["completed"] == 2 and s["failed"] == 0
    assert s["mean_ttft_ms"] == pytest.approx(200.0)
    assert s["median_tpot_ms"] == pytest.approx(150.0)
    assert s["max_max_tpot_ms"] == pytest.approx(200.0)
    assert s["p99_e2el_ms"] == pytest.approx(300 + 0.99 * 400)
    assert s["request_throughput"] == pytest.approx(2 / (0.3 + 0.7))


def test_busy_duration_is_the_union_of_in_flight_intervals():
    rows = [record([0.5, 2.0], start=0.0), record([0.5, 2.0], start=1.0), record([1.0], start=5.0)]
    assert busy_duration_s(rows) == pytest.approx(3.0 + 1.0)


def test_goodput_counts_requests_within_every_slo():
    fast = record([0.1, 0.2, 0.3])  # TTFT 100 ms, TPOT 100 ms
    slow_start = record([0.9, 1.0, 1.1], start=1.0)  # TTFT 900 ms
    slos = parse_goodput("ttft:500 tpot:150")
    assert slos == {"ttft": 500.0, "tpot": 150.0}
    assert meets_slo(fast, slos) and not meets_slo(slow_start, slos)
    s = summarize([fast, slow_start], slos)
    assert s["goodput_fraction"] == pytest.approx(0.5)
    assert s["request_goodput"] == pytest.approx(1 / (0.3 + 1.1))


@pytest.mark.parametrize("bad", ["ttft", "ttfx:100", "tpot:abc", "ttft:-5"])
def test_goodput_spec_errors_name_the_item(bad):
    with pytest.raises(ValueError, match="goodput SLO"):
        parse_goodput(bad)


def test_failed_request_counts_as_failed_not_good():
    failed = RequestRecord(0, "pd", 64, 8, 0.0, error="overloaded: busy")
    s = summarize([failed, record([0.1, 0.2])], {"ttft": 1000.0})
    assert s["failed"] == 1 and s["completed"] == 1
    assert s["goodput_fraction"] == pytest.approx(0.5)


def test_cloud_throughput_and_gain():
    cloud = [record([0.1, 0.2], mode="cloud", cloud_busy_s=4.0, cloud_tokens=128)] * 2
    pd = [record([0.1, 0.2], cloud_busy_s=1.0, cloud_tokens=20, handoff_index=10)] * 2
    s_cloud, s_pd = summarize(cloud, {}), summarize(pd, {})
    assert s_cloud["cloud_throughput"] == pytest.approx(0.25)  # requests per busy second
    assert s_pd["mean_handoff_index"] == 10
    assert cloud_throughput_gain(s_pd, s_cloud) == pytest.approx(4.0)


def test_targets_per_length():
    dev = summarize([record([2.0, 2.3, 2.6], mode="device")], {})
    pd = summarize([record([0.5, 0.7, 1.5], cloud_busy_s=1.0)], {})
    cloud = summarize([record([0.5, 0.6], mode="cloud", cloud_busy_s=3.5)], {})
    (row,) = check_targets({"512": {"device": dev, "pd": pd, "cloud": cloud}}, {512: 0.35}, 50.0)
    assert row["ttft_reduction"] == pytest.approx(0.75) and row["ttft_reduction_ok"]
    assert row["ttft_floor_ms"] == pytest.approx(400.0)
    assert row["ttft_over_floor"] == pytest.approx(1.25) and not row["ttft_over_floor_ok"]
    assert row["max_tpot_over_device_tpot"] == pytest.approx(800 / 300) and not row["max_tpot_ok"]
    assert row["cloud_busy_ratio"] == pytest.approx(3.5) and row["cloud_busy_ok"]
