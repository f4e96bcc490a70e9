"""``GenerationResult.cloud_cached_tokens``: the cloud's prefix-cache hit, from its end event."""

from __future__ import annotations

import json
import subprocess
import sys


def test_a_repeated_request_reports_the_cloud_cached_tokens(cloud_server, make_client):
    client = make_client(cloud_server.http_url)
    prompt = "Spell the word lighthouse backwards, then count its letters. (cloud_cached_tokens)"
    first = client.generate(prompt, max_tokens=2, mode="cloud")
    again = client.generate(prompt, max_tokens=2, mode="cloud")
    # A prompt this cloud has not seen: at most the chat template's system turn, which every
    # prompt before it shared, came from the cache.
    assert 0 <= first.cloud_cached_tokens < first.prompt_tokens - 10
    assert again.cloud_cached_tokens == again.prompt_tokens - 1  # all but the token that runs
    assert again.to_json_dict()["cloud_cached_tokens"] == again.cloud_cached_tokens
    pd = client.generate(prompt, max_tokens=2, mode="pd", cloud_tokens=1)
    assert pd.cloud_cached_tokens == pd.prompt_tokens - 1
    alone = client.generate(prompt, max_tokens=2, mode="device")
    assert alone.cloud_cached_tokens is None  # no cloud, no end event


def test_generate_json_includes_the_cloud_cached_tokens(cloud_server):
    cmd = [sys.executable, "-m", "benchmarks.cli", "generate", "--cloud", cloud_server.http_url]
    cmd += ["--mode", "cloud", "--max-tokens", "2", "--json", "Name a colour. (json cached)"]
    runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    first, again = (json.loads(r.stdout) for r in runs)
    assert 0 <= first["cloud_cached_tokens"] < first["prompt_tokens"] - 5
    assert again["cloud_cached_tokens"] == again["prompt_tokens"] - 1
