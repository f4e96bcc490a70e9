"""``pdd bench`` end to end: the quick preset against the session cloud, and bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from benchmarks.cli import app
from device_client.embedded import free_port

runner = CliRunner()
TINY = ["--quick", "--input-lens", "64,128", "--output-len", "8", "--num-prompts", "1"]
SUMMARY_KEYS = {
    "completed": int,
    "request_throughput": float,
    "mean_ttft_ms": float,
    "median_ttft_ms": float,
    "p99_ttft_ms": float,
    "mean_tpot_ms": float,
    "p99_tpot_ms": float,
    "median_itl_ms": float,
    "p99_max_tpot_ms": float,
    "mean_e2el_ms": float,
    "mean_cloud_tokens": float,
    "num_fallbacks": int,
}


def bench(*args: str):
    return runner.invoke(app, ["bench", *args])


@pytest.fixture(scope="module")
def quick_result(cloud_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    res = bench(*TINY, "--cloud", cloud_server.http_url, "--save-result", str(out / "r.json"),
                "--plots", str(out / "plots"), "--goodput", "ttft:60000")  # fmt: skip
    assert res.exit_code == 0, res.output
    return json.loads((out / "r.json").read_text()), out, res.output


def test_quick_result_schema(quick_result):
    result, _, output = quick_result
    assert set(result["modes"]) == {"device", "cloud", "pd"}
    for summary in result["modes"].values():
        for key, kind in SUMMARY_KEYS.items():
            assert isinstance(summary[key], kind), (key, summary[key])
        assert summary["completed"] == 2 and summary["request_goodput"] > 0
    assert set(result["by_input_len"]) == {"64", "128"}
    assert {"device", "cloud", "network", "split", "host"} <= set(result["profiles"])
    assert result["profiles"]["device"]["measured_prefill_tok_s"] > 0
    assert set(result["cloud_prefill_alone_ms"]) == {"64", "128"}
    cloud, pd = result["modes"]["cloud"], result["modes"]["pd"]
    # the gain is the cloud's own accounting: busy seconds per cloud-only request over pd's
    busy_ratio = cloud["mean_cloud_busy_s"] / pd["mean_cloud_busy_s"]
    assert result["cloud_throughput_gain"] == pytest.approx(busy_ratio)
    assert [t["input_len"] for t in result["targets"]] == [64, 128]
    assert "Median TTFT (ms)" in output and "P99 TPOT (ms)" in output


def test_quick_declares_its_device_emulation_and_pd_ttft_beats_device_only(quick_result):
    result, _, output = quick_result
    # the default emulation: a phone-class device 4x slower than this machine, said first
    assert output.splitlines()[0] == "device emulation: phone, 4x slower than this machine"
    assert result["config"]["device_emulation"]["name"] == "phone"
    assert result["profiles"]["device"]["slowdown"] == 4.0
    for length, modes in result["by_input_len"].items():
        pd, device = modes["pd"]["median_ttft_ms"], modes["device"]["median_ttft_ms"]
        # pd's first token is the cloud's prefill; device-only waits for a prefill 4x slower
        # than the cloud's (load slows both alike): measured ~0.3x, asserted with a wide margin
        assert pd < 0.7 * device, (length, pd, device)


def test_every_mode_answers_completely_and_like_device_only(quick_result):
    result, _, _ = quick_result
    rows = result["requests"]
    assert len(rows) == 6
    device = {r["index"]: r["token_ids"] for r in rows if r["mode"] == "device"}
    for r in rows:
        assert r["error"] is None and r["fallback"] is None
        assert r["num_tokens"] == 8 or r["end_reason"] == "eos"
        assert r["token_ids"] == device[r["index"]] and r["matches_device"]
    pd = [r for r in rows if r["mode"] == "pd"]
    cloud_tokens = {r["index"]: r["cloud_tokens"] for r in rows if r["mode"] == "cloud"}
    for r in pd:
        assert r["cloud_busy_s"] > 0
        assert r["cloud_tokens"] <= cloud_tokens[r["index"]]  # pd never costs more cloud tokens
        # cloud tokens up to the handoff, device tokens after it; with 8-token answers and a
        # 4x slower device the cloud may finish the answer first (no handoff, all cloud)
        m = r["handoff_index"] if r["handoff_index"] is not None else r["num_tokens"]
        assert r["sources"] == ["cloud"] * m + ["device"] * (r["num_tokens"] - m)
    assert all(r["sources"][0] == "cloud" for r in rows if r["mode"] == "cloud")


def test_plots_are_written(quick_result):
    _, out, _ = quick_result
    names = {p.name for p in (out / "plots").iterdir()}
    assert names == {"ttft_cdf.png", "ttft_vs_prompt_len.png", "token_timeline.png"}
    assert all((out / "plots" / n).read_bytes()[:4] == b"\x89PNG" for n in names)


def test_virtual_devices_load_mode(cloud_server, tmp_path):
    path = tmp_path / "vd.json"
    res = bench("--virtual-devices", "2", "--input-lens", "64,64", "--output-len", "12",
                "--cloud-tokens", "3", "--device-prefill-tok-s", "100", "--cloud",
                cloud_server.http_url, "--save-result", str(path))  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(path.read_text())
    cloud, pd = result["modes"]["cloud"], result["modes"]["pd"]
    assert cloud["completed"] == pd["completed"] == 8  # 2 lengths x 4 prompts (full preset)
    assert cloud["mean_cloud_tokens"] == 12
    assert pd["mean_cloud_tokens"] <= 4  # first token + N, or fewer after a handoff
    # closed-loop devices come back sooner when the cloud decodes 4 tokens instead of 12
    assert pd["mean_cloud_busy_s"] < cloud["mean_cloud_busy_s"]
    rates = pd["sustained_request_rate"] / cloud["sustained_request_rate"]
    assert result["rate_gain"] == pytest.approx(rates) and result["rate_gain"] > 1.0


def assert_clean_failure(res, message: str) -> None:
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)  # a clean exit, not an uncaught error


def test_unknown_mode():
    assert_clean_failure(bench("--modes", "device,warp"), "unknown mode")


def test_malformed_trace_line(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 64, "output_length": 4}\nnot json\n')
    assert_clean_failure(bench("--trace", str(trace), "--modes", "device"), "t.jsonl:2")


def test_length_past_the_context():
    res = bench("--modes", "device", "--input-lens", "8190", "--output-len", "16")
    assert_clean_failure(res, "exceeds the model's context")


def test_unreachable_cloud():
    res = bench(*TINY, "--cloud", f"http://127.0.0.1:{free_port()}", "--modes", "cloud")
    assert_clean_failure(res, "unreachable")


def test_bad_goodput_and_lengths():
    assert_clean_failure(bench("--goodput", "ttft=5"), "goodput SLO")
    assert_clean_failure(bench("--input-lens", "64,abc"), "--input-lens")
    assert_clean_failure(bench("--max-interval-ms", "0"), "--max-interval-ms must be > 0")
    assert_clean_failure(bench("--modes", "pd+refine"), "needs --refine-ratio")


@pytest.mark.parametrize("cache_mb", [None, 64])
def test_embedded_cloud_prefix_cache_is_off_unless_asked(tmp_path, cache_mb):
    """The modes replay the same prompts: with the embedded cloud's prefix cache on, pd would
    prefill from cloud-only's cached KV and look cheaper than it is."""
    out = tmp_path / "r.json"
    extra = [] if cache_mb is None else ["--cloud-prefix-cache-mb", str(cache_mb)]
    res = bench("--quick", "--input-lens", "64", "--output-len", "4", "--num-prompts", "1",
                "--modes", "cloud,pd", "--cloud-tokens", "3", "--save-result", str(out), *extra)  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["requests"]
    pd = [r for r in rows if r["mode"] == "pd"]
    assert pd and all(r["cloud_cached_tokens"] is not None for r in pd)
    if cache_mb is None:
        assert all(r["cloud_cached_tokens"] == 0 for r in rows)
    else:  # the pd request's prompt was cloud-only's: all but its last token from the cache
        assert all(r["cloud_cached_tokens"] > 0 for r in pd)
