"""Helpers for the vLLM engine tests: the pd stream over HTTP (SSE) and gRPC."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import httpx
from httpx_sse import connect_sse

from common.messages import End, FirstToken, GenerateRequest, Handoff, Token, parse_event
from common.proto import pd_pb2_grpc
from common.wire import event_from_proto, handoff_to_proto, request_to_proto

MAX_CONCURRENT = 2  # the shared vLLM cloud's --max-concurrent
STORY = {"prompt": "Once upon a time", "raw": True}  # keeps telling the story: no early EOS


def http_events(url: str, body: dict, on_event=None) -> list:
    events = []
    with (
        httpx.Client(timeout=120.0) as client,
        connect_sse(client, "POST", url + "/v1/pd/generate", json=body) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            events.append(parse_event(sse.event, sse.data))
            if on_event is not None:  # with the response headers (the handoff secret)
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
            for msg in pd_pb2_grpc.PDServiceStub(channel).Generate(messages(), timeout=120):
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
    assert isinstance(events[-1], End), f"stream did not end with End: {events[-1:]}"
    return events[-1]


def wait_idle(url: str, tries: int = 100) -> bool:
    for _ in range(tries):
        if httpx.get(url + "/health").json()["active_requests"] == 0:
            return True
        threading.Event().wait(0.1)
    return False
