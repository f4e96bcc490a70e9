"""``pdd generate`` as a user runs it: JSON output against a real cloud, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

from device_helpers import SHORT_PROMPT


def _pdd(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmarks.cli", "generate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_generate_json_against_a_running_cloud(cloud_server, reference):
    # A device 20x slower than this machine: the cloud's first token wins the race by far
    # (at 1x a loaded machine sometimes let the device's own prefill finish first).
    args = ("--cloud", cloud_server.grpc_url, "--json", "--max-tokens", "12")
    out = _pdd(SHORT_PROMPT, *args, "--device-slowdown", "20")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in (
        "mode",
        "token_ids",
        "text",
        "sources",
        "ttft_s",
        "tpot_mean_s",
        "max_tpot_s",
        "handoff_index",
        "cloud_tokens",
        "fallback",
        "prompt_tokens",
        "kept_prompt_tokens",
    ):
        assert key in result, key
    assert result["token_ids"] == reference(SHORT_PROMPT, 12)
    assert result["fallback"] is None
    assert result["sources"][0] == "cloud", "the first token comes from the cloud"


def test_generate_rejects_bad_input_with_a_message():
    bad_mode = _pdd("hi", "--mode", "sideways")
    assert bad_mode.returncode == 2 and "sideways" in bad_mode.stderr
    bad_max = _pdd("hi", "--mode", "device", "--max-tokens", "0")
    assert bad_max.returncode == 2
    assert "max_tokens" in bad_max.stdout and "greater than 0" in bad_max.stdout
    assert "Traceback" not in bad_max.stdout + bad_max.stderr
    bad_url = _pdd("hi", "--cloud", "ftp://nowhere:1")
    assert bad_url.returncode == 2 and "http://host:port" in bad_url.stdout
