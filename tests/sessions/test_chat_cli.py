"""``pdd chat`` with piped stdin: one turn per line, a summary line per turn."""

from __future__ import annotations

import json
import re
import subprocess
import sys


def _chat(*args: str, stdin: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmarks.cli", "chat", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300)


def test_chat_over_a_cloud_keeps_the_history(cloud_server):
    out = _chat(
        "--cloud",
        cloud_server.http_url,
        "--max-tokens",
        "6",
        "--device-slowdown",
        "4",
        stdin="What is the capital of France?\n\nAnd of Italy?\n/exit\nnever read\n",
    )
    assert out.returncode == 0, out.stderr
    summaries = re.findall(
        r"turn (\d+)\s+(\w+)\s+TTFT \d+ ms\s+handoff (\S+)\s+cached (\d+)/(\d+) prompt tokens"
        r" \(cloud (\S+)\)",
        out.stdout,
    )
    assert [s[0] for s in summaries] == ["1", "2"], out.stdout  # the blank line is skipped
    # Turn 2: the device holds at least turn 1's prompt (and the answer tokens it absorbed).
    assert summaries[0][3] == "0" and int(summaries[1][3]) >= int(summaries[0][4])
    # The cloud's prefix cache holds turn 1's prompt when turn 2 (its extension) arrives.
    assert int(summaries[1][5]) >= int(summaries[0][4]) - 1, out.stdout
    assert "Traceback" not in out.stdout + out.stderr


def test_chat_device_only_and_a_new_session():
    out = _chat("--mode", "device", "--max-tokens", "4", stdin="Hello.\n/new\nHello.\n")
    assert out.returncode == 0, out.stderr
    assert "new session" in out.stdout
    cached = re.findall(r"cached (\d+)/\d+ prompt tokens \(cloud (\S+)\)", out.stdout)
    assert cached == [("0", "-"), ("0", "-")], out.stdout


def test_chat_json_prints_one_object_per_turn():
    out = _chat("--mode", "device", "--max-tokens", "3", "--json", stdin="Hi.\nAgain?\n")
    assert out.returncode == 0, out.stderr
    turns = [json.loads(line) for line in out.stdout.splitlines()]
    assert [t["turn"] for t in turns] == [1, 2]
    assert turns[0]["cached_prompt_tokens"] == 0
    assert turns[1]["cached_prompt_tokens"] >= turns[0]["prompt_tokens"]
    assert all(t["rerendered"] is None and len(t["token_ids"]) == 3 for t in turns)


def test_chat_refuses_raw():
    out = _chat("--mode", "device", "--raw", stdin="Hi.\n")
    assert out.returncode == 2 and "chat template" in out.stdout
