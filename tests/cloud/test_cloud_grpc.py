"""The cloud over gRPC: same engine, same messages, same errors as HTTP."""

from __future__ import annotations

import re

import grpc
import pytest
from cloud_clients import story
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_probes import metric, wait_for
from support import end_of, grpc_events, http_events, token_ids

from common.messages import EndReason, FirstToken, GenerateRequest
from common.proto import pd_pb2 as pb
from common.proto import pd_pb2_grpc
from common.wire import request_to_proto

GENERATE = "/pd.v1.PDService/Generate"


@pytest.mark.parametrize(
    "body",
    [
        story(max_tokens=10, cloud_tokens=9),
        {
            "messages": [{"role": "user", "content": "Name a fruit."}],
            "max_tokens": 10,
            "cloud_tokens": 9,
        },
        story(max_tokens=6, cloud_tokens=5, sampling={"temperature": 0.8, "seed": 7}),
    ],
    ids=["raw-greedy", "chat-greedy", "seeded-sampling"],
)
def test_grpc_stream_matches_http_token_for_token(cloud_server, body):
    over_http = http_events(cloud_server.http_url, body)
    over_grpc = grpc_events(cloud_server.grpc_target, GenerateRequest(**body))
    assert token_ids(over_grpc) == token_ids(over_http)
    assert [e.text for e in over_grpc[:-1]] == [e.text for e in over_http[:-1]]
    assert end_of(over_grpc).reason == end_of(over_http).reason


def test_grpc_handoff_stops_the_cloud_early(cloud_server):
    request = GenerateRequest(**story(max_tokens=16, cloud_tokens=15))
    events = grpc_events(cloud_server.grpc_target, request, handoff_at=3)
    assert isinstance(events[0], FirstToken)
    assert end_of(events).reason is EndReason.HANDOFF
    assert end_of(events).usage.completion_tokens <= 3 + 2


def test_grpc_cancel_cancels_the_request(cloud_server):
    url = cloud_server.http_url
    cancelled = 'reason="cancelled"'
    before = metric(url, "pdd_requests_total", cancelled)
    request = request_to_proto(GenerateRequest(**story(max_tokens=200, cloud_tokens=199)))
    with grpc.insecure_channel(cloud_server.grpc_target) as channel:
        call = pd_pb2_grpc.PDServiceStub(channel).Generate(iter([request]), timeout=60)
        assert next(call).WhichOneof("kind") == "first_token"
        call.cancel()
    assert wait_for(lambda: metric(url, "pdd_requests_total", cancelled) == before + 1)
    assert wait_for(lambda: metric(url, "pdd_active_requests") == 0)


def _error_of(target: str, messages: list) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        raw = channel.stream_stream(
            GENERATE,
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=pb.CloudMessage.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            list(raw(iter(messages), timeout=30))
    return info.value


def _request(**fields) -> pb.DeviceMessage:
    msg = pb.DeviceMessage()
    msg.request.prompt = "hi"
    msg.request.max_tokens = 4
    msg.request.cloud_tokens = 1
    for name, value in fields.items():
        setattr(msg.request, name, value)
    return msg


def _long_prompt() -> pb.DeviceMessage:
    msg = _request()
    msg.request.prompt_ids.ids.extend([1] * 9000)
    return msg


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ([_request(prompt="")], "prompt is empty"),
        ([_request(max_tokens=0)], "max_tokens"),
        ([_request(cloud_tokens=-1)], "cloud_tokens"),
        ([_long_prompt()], "shorten the prompt"),
        ([_request(fingerprint="0000")], "does not match"),
        ([b"\xff\xff\xff\xff"], "malformed protobuf"),
        ([pb.DeviceMessage(handoff=pb.Handoff(at_index=1))], "first DeviceMessage"),
        ([], "closed before a request"),
    ],
    ids=[
        "empty-prompt",
        "max-tokens-0",
        "cloud-tokens-negative",
        "prompt-too-long",
        "fingerprint",
        "malformed",
        "handoff-first",
        "no-request",
    ],
)
def test_bad_input_is_invalid_argument(cloud_server, messages, text):
    err = _error_of(cloud_server.grpc_target, messages)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert text in err.details()


def test_standard_health_service_reports_serving(cloud_server):
    with grpc.insecure_channel(cloud_server.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "pd.v1.PDService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_late_handoff_on_a_finished_stream_is_harmless(cloud_server):
    request = GenerateRequest(**story(cloud_tokens=0))
    events = grpc_events(cloud_server.grpc_target, request, handoff_at=1)
    assert end_of(events).reason is EndReason.BUDGET
    follow_up = grpc_events(cloud_server.grpc_target, GenerateRequest(**story(cloud_tokens=1)))
    assert end_of(follow_up).usage.completion_tokens == 2


def test_a_device_that_floods_its_stream_does_not_flood_the_log(cloud_server):
    request = GenerateRequest(**story(max_tokens=8, cloud_tokens=7))
    message = request_to_proto(request)  # sent again and again: not a handoff, so ignored
    with grpc.insecure_channel(cloud_server.grpc_target) as channel:
        stub = pd_pb2_grpc.PDServiceStub(channel)
        replies = list(stub.Generate(iter([message] * 51), timeout=60))
    assert replies[-1].WhichOneof("kind") == "end"

    def ignored_lines() -> list[str]:
        text = cloud_server.log_path.read_text()
        return [ln for ln in text.splitlines() if request.request_id in ln and "ignored" in ln]

    assert wait_for(lambda: any("device messages" in ln for ln in ignored_lines()), 10.0)
    lines = ignored_lines()
    assert len(lines) == 2, lines  # the first one, then one count for the stream (was 50 lines)
    counted = re.search(r"ignored (\d+) device messages", lines[1])
    assert "not a handoff" in lines[0] and counted and 2 <= int(counted.group(1)) <= 50
