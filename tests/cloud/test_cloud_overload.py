"""Admission: with one slot, a second request is refused at once; the server stays healthy.
Shutdown: SIGTERM ends active streams with an End and the process exits cleanly."""

from __future__ import annotations

import time

import grpc
import httpx
from cloud_clients import story
from httpx_sse import connect_sse
from server_probes import metric, wait_for
from support import end_of, http_events

from common.messages import EndReason, GenerateRequest, parse_event
from common.proto import pd_pb2_grpc
from common.wire import request_to_proto

LONG = story(max_tokens=200, cloud_tokens=199)  # holds the slot until cancelled


def test_second_request_is_rejected_at_once_over_http_and_grpc(start_cloud):
    server = start_cloud("--max-concurrent", "1")
    url = server.http_url
    with (
        httpx.Client(timeout=60.0) as client,
        connect_sse(client, "POST", url + "/v1/pd/generate", json=LONG) as source,
    ):
        holder = source.iter_sse()  # keep a reference: a dropped iterator closes the stream
        next(holder)  # the first request holds the only slot and is decoding

        start = time.monotonic()
        reply = httpx.post(url + "/v1/pd/generate", json=story(), timeout=10.0)
        assert time.monotonic() - start < 1.0
        assert reply.status_code == 429
        assert int(reply.headers["Retry-After"]) >= 1
        assert reply.json()["error"]["code"] == "overloaded"

        with grpc.insecure_channel(server.grpc_target) as channel:
            call = pd_pb2_grpc.PDServiceStub(channel).Generate(
                iter([request_to_proto(GenerateRequest(**story()))]), timeout=10
            )
            try:
                list(call)
                raise AssertionError("the gRPC request was admitted past the limit")
            except grpc.RpcError as err:
                assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "slots are busy" in err.details()

        assert httpx.get(url + "/health").status_code == 200
        assert metric(url, "pdd_active_requests") == 1  # the holder was never disturbed
        assert next(holder).event == "token"
    rejected = metric(url, "pdd_rejected_requests_total", 'reason="overloaded"')
    assert rejected == 2
    assert wait_for(lambda: metric(url, "pdd_active_requests") == 0)
    assert end_of(http_events(url, story(cloud_tokens=1))).usage.completion_tokens == 2


def test_sigterm_ends_active_streams_and_exits(start_cloud):
    server = start_cloud()
    events = []
    with (
        httpx.Client(timeout=60.0) as client,
        connect_sse(client, "POST", server.http_url + "/v1/pd/generate", json=LONG) as source,
    ):
        for sse in source.iter_sse():
            events.append(parse_event(sse.event, sse.data))
            if len(events) == 1:
                server.process.terminate()
    assert server.process.wait(20) == 0
    assert len(events) < 200
    if events[-1].type == "end":  # the stream may also just close; either way it stops
        assert end_of(events).reason is EndReason.ERROR
        assert "shutting down" in end_of(events).message
