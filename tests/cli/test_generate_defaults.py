"""``pdd generate`` as a new user first runs it: the defaults must show the split.

The default device emulation is a phone-class device 4x slower than this machine, so the cloud's
first token wins the race and the answer is cloud tokens, then device tokens, with a handoff.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from device_client.config import device_emulation

CORPUS = Path(__file__).parents[2] / "benchmarks" / "data" / "corpus.txt"


def _pdd_generate(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmarks.cli", "generate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _prompt() -> str:
    # ~300 tokens: the emulated device's prefill takes ~4x the cloud's, seconds apart, so the
    # race is not close even on a loaded machine (load slows both sides alike).
    passage = CORPUS.read_text()[:1200]
    return passage + "\n\nRetell the passage above in your own words, in detail."


@pytest.mark.slow
def test_generate_with_the_defaults_shows_cloud_then_device_tokens_and_the_handoff():
    # Only --max-tokens is set (above the default budget N + 1 = 65 cloud tokens, so the device
    # always has tokens left to decode); everything else is what a new user gets.
    out = _pdd_generate(_prompt(), "--max-tokens", "80")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == "device emulation: phone, 4x slower than this machine"
    split = re.search(r"first token from the (\w+) at \d+ ms; (\d+) cloud tokens, then (\d+) "
                      r"device tokens", out.stdout)  # fmt: skip
    handoff = re.search(r"handoff at m = (\d+)", out.stdout)
    assert split and handoff, out.stdout
    first, num_cloud, num_device = split.group(1), int(split.group(2)), int(split.group(3))
    assert first == "cloud"
    assert num_cloud >= 1 and num_device >= 1
    assert int(handoff.group(1)) == num_cloud  # the device took over after the cloud's tokens
    assert "Warning" not in out.stdout + out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_generate_json_saves_the_emulation_and_slowdown_1_is_this_machine(cloud_server):
    args = ("--cloud", cloud_server.http_url, "--json", "--mode", "device", "--max-tokens", "2")
    out = _pdd_generate("Hi", *args, "--device-slowdown", "1")
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[0] == "device emulation: this-machine, this machine's real speed"
    assert json.loads(out.stdout)["device_emulation"]["slowdown"] == 1.0


def test_named_and_custom_emulations():
    assert device_emulation().name == "phone" and device_emulation().slowdown == 4.0
    assert device_emulation(slowdown=1.0).name == "this-machine"
    assert device_emulation("this-machine").slowdown == 1.0
    custom = device_emulation(slowdown=10.0)
    assert custom.name == "custom" and "10x slower" in custom.describe()
    with pytest.raises(ValueError, match="choose from phone, this-machine"):
        device_emulation("toaster")
    with pytest.raises(ValueError, match=">= 1"):
        device_emulation(slowdown=0.5)


@pytest.mark.slow
def test_refine_ratio_changes_what_the_emulated_device_prefills(cloud_server):
    # The keep-set comes with the cloud's first token; the phone-class device is still early in
    # its own prefill then, so it skips part of the rest (not the ideal half: what it prefilled
    # before the keep-set stays).
    args = ("--cloud", cloud_server.http_url, "--json", "--max-tokens", "80")
    out = _pdd_generate(_prompt(), *args, "--refine-ratio", "0.5")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    total, kept = result["prompt_tokens"], result["kept_prompt_tokens"]
    assert total // 2 <= kept < 0.9 * total, (kept, total)
