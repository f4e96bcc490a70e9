"""Small test clients for a cloud server: the pd stream over HTTP (SSE) and gRPC, and metrics."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
from httpx_sse import connect_sse

from common.messages import End, FirstToken, GenerateRequest, Handoff, Token, parse_event
from common.proto import pd_pb2_grpc
from common.wire import event_from_proto, handoff_to_proto, request_to_proto

# The secured cloud (conftest ``secured_cloud``): its key, operator settings and body limit.
API_KEY = "test-key-1"
SETTINGS = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "settings.json"
MAX_BODY_BYTES = 8192

STORY = "Once upon a time"  # raw: the model keeps telling the story, no early EOS


def story(**fields) -> dict:
    """A short raw request body; ``fields`` override."""
    return {"prompt": STORY, "raw": True, "max_tokens": 8, "cloud_tokens": 7} | fields


def http_events(base_url: str, body: dict, on_event: Callable | None = None) -> list:
    """POST /v1/pd/generate and read the whole SSE stream as typed events."""
    events = []
    with (
        httpx.Client(timeout=60.0) as client,
        connect_sse(client, "POST", base_url + "/v1/pd/generate", json=body) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            events.append(parse_event(sse.event, sse.data))
            if on_event is not None:
                on_event(events[-1])
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
            for msg in pd_pb2_grpc.PDServiceStub(channel).Generate(messages(), timeout=60):
                events.append(event_from_proto(msg))
                if handoff_at is not None and index_of(events[-1]) == handoff_at - 1:
                    outbox.put(handoff_to_proto(Handoff(at_index=handoff_at)))
        finally:
            outbox.put(None)
    return events


def index_of(event) -> int | None:
    if isinstance(event, FirstToken):
        return 0
    if isinstance(event, Token):
        return event.index
    return None


def token_ids(events: list) -> list[int]:
    return [e.token_id for e in events if isinstance(e, FirstToken | Token)]


def end_of(events: list) -> End:
    assert isinstance(events[-1], End), f"stream did not end with an End event: {events[-1:]}"
    return events[-1]
