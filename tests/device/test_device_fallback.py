"""Correctness property 3: whatever the cloud does, the device finishes the same answer.

Faults are injected at a chosen moment: the cloud killed (SIGKILL) or frozen (SIGSTOP) right after
the device has shown its first cloud token.
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from device_helpers import COUNTING_PROMPT, LONG_PROMPT, SHORT_PROMPT

from device_client.embedded import free_port

MAX_TOKENS = 20


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_cloud_down_before_the_request(make_client, reference, scheme):
    client = make_client(f"{scheme}://127.0.0.1:{free_port()}", connect_timeout_s=0.5)
    result = client.generate(SHORT_PROMPT, max_tokens=MAX_TOKENS, mode="pd")
    assert result.token_ids == reference(SHORT_PROMPT, MAX_TOKENS)
    assert result.fallback is not None and "unreachable" in result.fallback
    assert set(result.sources) == {"device"}


def _run_with_fault(client, mode: str, fault) -> tuple:
    """Stream an answer and call ``fault()`` once the first cloud token is shown."""
    answer = client.answer(LONG_PROMPT, max_tokens=MAX_TOKENS, mode=mode, cloud_tokens=200)
    injected = False
    for tok in client.stream_answer(answer):
        if tok.source == "cloud" and not injected:
            fault()
            injected = True
    assert injected, "the cloud never showed a token: the fault was not injected"
    return answer.result


@pytest.mark.parametrize("mode", ["pd", "cloud"])
def test_cloud_killed_mid_stream(start_cloud, make_client, reference, mode):
    server = start_cloud()
    client = make_client(server.http_url, device_slowdown=3.0, prefill_chunk_tokens=16)
    result = _run_with_fault(client, mode, lambda: os.kill(server.pid, signal.SIGKILL))
    assert result.token_ids == reference(LONG_PROMPT, MAX_TOKENS)
    assert result.fallback is not None, "the device should say why it finished alone"
    assert "device" in result.sources, "the device finished the answer"


def test_cloud_frozen_mid_stream_times_out(start_cloud, make_client, reference):
    """A cloud that stops answering (not closing) is given up after the stall timeout."""
    server = start_cloud()
    client = make_client(server.http_url, stall_timeout_s=0.5)
    try:
        result = _run_with_fault(client, "cloud", lambda: os.kill(server.pid, signal.SIGSTOP))
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert result.token_ids == reference(LONG_PROMPT, MAX_TOKENS)
    assert result.fallback is not None and "silent" in result.fallback


def test_overloaded_cloud_rejects_at_once_and_device_finishes(start_cloud, make_client, reference):
    server = start_cloud("--max-concurrent", "1")
    hold = {"prompt": "Count from one to one hundred.", "max_tokens": 400, "cloud_tokens": 399}
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        with http.stream("POST", "/v1/pd/generate", json=hold) as busy:
            assert busy.status_code == 200
            lines = busy.iter_lines()  # keep a reference: dropping it closes the stream
            next(lines)
            result = make_client(server.http_url).generate(
                SHORT_PROMPT, max_tokens=MAX_TOKENS, mode="pd"
            )
        assert result.token_ids == reference(SHORT_PROMPT, MAX_TOKENS)
        assert result.fallback is not None and "overloaded" in result.fallback
        assert http.get("/health").status_code == 200, "the server keeps serving"


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_cloud_stops_within_a_step_of_the_handoff(cloud_server, make_client, transport):
    """Property 4: after a handoff at m, the cloud generated at most m + 2 tokens."""
    url = cloud_server.grpc_url if transport == "grpc" else cloud_server.http_url
    # A short prompt with a long answer: the device is ready long before the cloud could finish.
    client = make_client(url, prefill_chunk_tokens=8)
    result = client.generate(COUNTING_PROMPT, max_tokens=60, mode="pd", cloud_tokens=200)
    m = result.handoff_index
    assert len(result.tokens) == 60
    assert m is not None and m < 50, "the device must take over well before the budget ends"
    assert result.fallback is None
    assert result.cloud_busy_s is not None, "the end event with the cloud's usage arrived"
    assert result.cloud_tokens <= m + 2
