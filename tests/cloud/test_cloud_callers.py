"""Who may stop a request, and what a device learns from each transport (real servers).

A handoff acts only on a request of the same caller (same API key; with keys off, the request's
secret); anyone else gets exactly the unknown-id answer. Over HTTP and gRPC the device gets the
same error types and hints, and the opener returns at admission, before any event.
"""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from cloud_clients import API_KEY, MAX_BODY_BYTES, STORY, story
from httpx_sse import connect_sse
from server_probes import metric, wait_for

from common.errors import FingerprintMismatch, Overloaded, PromptTooLong, RequestTooLarge
from common.messages import End, EndReason, FirstToken, GenerateRequest, Token
from common.wire import REQUEST_SECRET_HEADER
from device_client.config import ClientConfig
from device_client.embedded import start_cloud
from device_client.transports import _status_error, open_stream

LONG = story(max_tokens=200, cloud_tokens=199)  # decodes for many seconds unless stopped


def handoff(url: str, request_id: str, headers: dict) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/pd/requests/{request_id}/handoff", json={"at_index": 1}, headers=headers
    )


def without_id(reply: httpx.Response) -> tuple:
    error = reply.json()["error"]
    return reply.status_code, error["code"], error["message"].replace("target", "ID")


def test_without_keys_only_the_requests_secret_stops_it(cloud_server):
    url = cloud_server.http_url
    with (
        httpx.Client(timeout=60.0) as client,
        connect_sse(
            client, "POST", url + "/v1/pd/generate", json=LONG | {"request_id": "target"}
        ) as source,
    ):
        events = source.iter_sse()
        next(events)  # decoding now
        secret = source.response.headers[REQUEST_SECRET_HEADER]
        unknown = handoff(url, "ID", {})
        assert unknown.status_code == 404
        for headers in ({}, {REQUEST_SECRET_HEADER: "guess"}):
            assert without_id(handoff(url, "target", headers)) == without_id(unknown)
        assert next(events).event == "token", "a stranger's handoff stopped the request"
        assert (
            handoff(url, "target", {REQUEST_SECRET_HEADER: secret}).json()["status"] == "stopping"
        )
        assert [sse.event for sse in events][-1] == "end"


def test_with_keys_only_the_same_key_stops_it(secured_cloud):
    url = secured_cloud.http_url
    mine = {"Authorization": f"Bearer {API_KEY}"}
    other = {"Authorization": "bearer other-key"}  # a valid key (lower-case scheme is fine)
    with (
        httpx.Client(timeout=60.0, headers=mine) as client,
        connect_sse(
            client, "POST", url + "/v1/pd/generate", json=LONG | {"request_id": "target"}
        ) as source,
    ):
        events = source.iter_sse()
        next(events)
        unknown = handoff(url, "ID", other)
        assert without_id(handoff(url, "target", other)) == without_id(unknown)
        assert next(events).event == "token", "another key's handoff stopped the request"
        assert handoff(url, "target", mine).json()["status"] == "stopping"  # no secret needed
        assert [sse.event for sse in events][-1] == "end"


def idle(cloud) -> bool:
    """Wait until the cloud holds no request (closed streams leave at the engine's next step)."""
    return wait_for(lambda: metric(cloud.http_url, "pdd_active_requests") == 0)


def request_with(**fields) -> GenerateRequest:
    return GenerateRequest(**story(max_tokens=4, cloud_tokens=3) | fields)


@pytest.fixture(scope="module")
def one_slot_cloud():
    """One slot and one queue place: a second request waits, a third is refused."""
    cloud = start_cloud(
        *("--max-concurrent", "1", "--max-queue", "1", "--max-body-bytes", str(MAX_BODY_BYTES)),
        *("--max-prompt-tokens", "64"),
    )
    yield cloud
    cloud.stop()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_both_transports_give_the_device_the_same_error_types(one_slot_cloud, transport):
    config = ClientConfig(cloud_url=one_slot_cloud.url(transport))
    assert idle(one_slot_cloud)

    async def refused(request: GenerateRequest) -> Exception:
        with pytest.raises(Exception) as err:
            await open_stream(request, config)
        return err.value

    async def scenario() -> None:
        assert type(await refused(request_with(fingerprint="0000"))) is FingerprintMismatch
        assert type(await refused(request_with(prompt_ids=[1] * 100, prompt=None))) is PromptTooLong
        too_big = request_with(prompt=STORY * MAX_BODY_BYTES)
        assert type(await refused(too_big)) is RequestTooLarge
        holders = [await open_stream(GenerateRequest(**LONG), config) for _ in range(2)]
        try:
            busy = await refused(request_with())
            assert type(busy) is Overloaded and busy.retry_after_s == 1.0  # the server's hint
        finally:
            for holder in holders:
                await holder.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_the_opener_returns_at_admission_so_an_early_handoff_is_a_handoff(
    one_slot_cloud, transport
):
    """A device whose prefill ends before the cloud's first token hands off at 0: the request
    waits in the queue behind another one, so no event can come before the handoff."""
    config = ClientConfig(cloud_url=one_slot_cloud.url(transport))
    assert idle(one_slot_cloud)

    async def scenario() -> list:
        holder = await open_stream(GenerateRequest(**LONG), config)
        try:
            queued = await asyncio.wait_for(open_stream(request_with(), config), 10.0)
            await queued.handoff(0)
        finally:
            await holder.aclose()  # frees the slot; the queued request leaves at once
        try:
            return [e async for e in queued.events()]
        finally:
            await queued.aclose()

    events = asyncio.run(scenario())
    assert not [e for e in events if isinstance(e, FirstToken | Token)]
    assert isinstance(events[-1], End) and events[-1].reason is EndReason.HANDOFF


def test_grpc_trailers_carry_the_error_type_and_the_retry_hint():
    trailers = (("pd-error-code", "overloaded"), ("retry-after-s", "2.5"))
    err = _status_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", trailers)
    assert type(err) is Overloaded and err.retry_after_s == 2.5
    err = _status_error(
        grpc.StatusCode.INVALID_ARGUMENT, "x", (("pd-error-code", "prompt_too_long"),)
    )
    assert type(err) is PromptTooLong
    # gRPC's own size cap (no trailer) is not an overload the device should wait out
    err = _status_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max", ())
    assert type(err) is RequestTooLarge
