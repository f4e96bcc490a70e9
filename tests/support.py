"""Helpers shared by every test folder: fast pacing, and the pd stream read over HTTP and gRPC.

Importable as ``support`` from any test (``tests/`` is on ``sys.path``: the root conftest lives
there). The fixtures built on these (``device_only``, ``reference``, ``make_client``) are in
``tests/conftest.py``.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator

import grpc
import httpx
from httpx_sse import connect_sse

from common.messages import End, FirstToken, GenerateRequest, Handoff, Token, parse_event
from common.proto import pd_pb2_grpc
from common.settings import Bucket, SplitSettings
from common.wire import event_from_proto, handoff_to_proto, request_to_proto

STREAM_TIMEOUT_S = 120.0  # a hung stream fails the test (the vLLM engine is the slowest)


def fast_pacing(*buckets: Bucket, cloud_tokens: int = 64) -> SplitSettings:
    """Fast pacing so tests spend their time in the model, not in waits; ``buckets`` go before
    the default one (N = ``cloud_tokens``, every prompt length)."""
    default = Bucket(
        max_prompt_len=1 << 20, cloud_tokens=cloud_tokens, min_interval_s=0.0, max_interval_s=0.05
    )
    return SplitSettings(buckets=[*buckets, default])


def http_events(base_url: str, body: dict, on_event: Callable | None = None) -> list:
    """POST /v1/pd/generate and read the whole SSE stream as typed events; ``on_event(event,
    response_headers)`` after each (the headers carry the handoff secret)."""
    events = []
    with (
        httpx.Client(timeout=STREAM_TIMEOUT_S) as client,
        connect_sse(client, "POST", base_url + "/v1/pd/generate", json=body) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            events.append(parse_event(sse.event, sse.data))
            if on_event is not None:
                on_event(events[-1], source.response.headers)
    return events


def grpc_events(target: str, request: GenerateRequest, handoff_at: int | None = None) -> list:
    """One Generate stream; with ``handoff_at`` = m, hand off once token m - 1 has arrived."""
    outbox: queue.Queue = queue.Queue()
    outbox.put(request_to_proto(request))

    def messages() -> Iterator:
        while (msg := outbox.get()) is not None:
            yield msg

    events = []
    with grpc.insecure_channel(target) as channel:
        try:
            stream = pd_pb2_grpc.PDServiceStub(channel).Generate(
                messages(), timeout=STREAM_TIMEOUT_S
            )
            for msg in stream:
                events.append(event_from_proto(msg))
                if handoff_at is not None and index_of(events[-1]) == handoff_at - 1:
                    outbox.put(handoff_to_proto(Handoff(at_index=handoff_at)))
        finally:
            outbox.put(None)
    return events


def index_of(event) -> int | None:
    if isinstance(event, FirstToken):
        return 0
    return event.index if isinstance(event, Token) else None


def token_ids(events: list) -> list[int]:
    return [e.token_id for e in events if isinstance(e, FirstToken | Token)]


def end_of(events: list) -> End:
    assert isinstance(events[-1], End), f"stream did not end with an End event: {events[-1:]}"
    return events[-1]


def assert_pd_matches_device_only(client, reference, prompt: str, max_tokens: int, budget: int):
    """Correctness property 1 on any cloud engine: a pd answer with cloud budget N is the
    device-only answer, token for token, shown as one stream (every cloud token before every
    device token, at most 1 + N of them, indices 0..n-1). Budgets from 0 to past the answer."""
    result = client.generate(prompt, max_tokens=max_tokens, mode="pd", cloud_tokens=budget)
    assert result.fallback is None
    assert result.token_ids == reference(prompt, max_tokens)
    sources = result.sources
    # No handoff means the cloud delivered the whole answer before the device was ready.
    m = len(result.tokens) if result.handoff_index is None else result.handoff_index
    assert m >= 1, "the cloud's first token should be shown before the device's"
    assert m <= budget + 1, "the device never shows more cloud tokens than the budget"
    assert sources[: min(m, len(sources))] == ["cloud"] * min(m, len(sources))
    assert set(sources[m:]) <= {"device"}
    assert [t.index for t in result.tokens] == list(range(len(result.tokens)))
    return result
