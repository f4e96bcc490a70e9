"""The gateway over three real instances (one slot each) on loopback, with real device clients."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from httpx_sse import EventSource
from server_probes import metric, wait_for
from support import fast_pacing

from common.messages import End, EndReason, FirstToken, Token, parse_event
from common.wire import REQUEST_SECRET_HEADER
from device_client.client import DeviceClient
from device_client.embedded import EmbeddedCloud, free_port, start_cloud

PROMPT = "Name three primary colours."
MAX_TOKENS = 12
PD_BODY = {"prompt": "Once upon a time", "raw": True, "max_tokens": 200, "cloud_tokens": 199}


def start_gateway(upstreams: list[EmbeddedCloud]) -> tuple[str, subprocess.Popen]:
    port = free_port()
    cmd = [sys.executable, "-m", "cloud_server.gateway_main", "--port", str(port)]
    cmd += ["--max-forwards", "2", "--health-interval-s", "0.3", "--log-level", "warning"]
    for cloud in upstreams:
        cmd += ["--upstream", cloud.http_url]
    process = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"

    def is_up() -> bool:
        try:
            return httpx.get(url + "/health", timeout=1.0).json()["healthy_upstreams"] == 3
        except httpx.TransportError:
            return False

    assert wait_for(is_up, 60.0), "gateway did not come up"
    return url, process


@contextlib.contextmanager
def fleet_of_three() -> Iterator[tuple[str, list[EmbeddedCloud]]]:
    with ThreadPoolExecutor(3) as pool:
        clouds = list(pool.map(lambda _: start_cloud("--max-concurrent", "1"), range(3)))
    url, gateway = start_gateway(clouds)
    try:
        yield url, clouds
    finally:
        gateway.terminate()
        gateway.wait(10)
        for cloud in clouds:
            cloud.stop()


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[str, list[EmbeddedCloud]]]:
    """Three one-slot instances behind a gateway; tests using it leave every instance idle."""
    with fleet_of_three() as running:
        yield running


@pytest.fixture(scope="module")
def reference(loaded_model) -> list[int]:
    with DeviceClient(None, model=loaded_model) as device:
        return device.generate(PROMPT, max_tokens=MAX_TOKENS, mode="device").token_ids


def event_of(sse):
    return parse_event(sse.event, sse.data)


def open_pd_stream(client: httpx.Client, url: str, request_id: str):
    """Open a pd stream through the gateway and read up to its first token."""
    body = PD_BODY | {"request_id": request_id}
    response = client.send(
        client.build_request("POST", url + "/v1/pd/generate", json=body), stream=True
    )
    assert response.status_code == 200, response.read()
    events = EventSource(response).iter_sse()
    first = event_of(next(events))
    assert isinstance(first, FirstToken)
    return response, events


def counters(url: str) -> dict[str, float]:
    names = ("forwards", "upstream_rejections", "rejected_requests")
    return {n: metric(url, f"pdd_gateway_{n}_total") for n in names}


def test_full_fleet_forwards_then_rejects_and_handoff_reaches_the_right_instance(fleet):
    url, clouds = fleet
    before = counters(url)
    with httpx.Client(timeout=60.0) as client:
        held = [open_pd_stream(client, url, f"held-{i}") for i in range(3)]
        upstreams = {resp.headers["x-pdd-upstream"] for resp, _ in held}
        assert upstreams == {c.http_url for c in clouds}, "one request per one-slot instance"
        extra = client.post(url + "/v1/pd/generate", json=PD_BODY)  # every slot is taken
        assert extra.status_code == 429 and extra.json()["error"]["code"] == "overloaded"
        response, events = held[1]
        secret = {REQUEST_SECRET_HEADER: response.headers[REQUEST_SECRET_HEADER]}
        handoff = client.post(
            url + "/v1/pd/requests/held-1/handoff", json={"at_index": 2}, headers=secret
        )
        assert handoff.status_code == 200 and handoff.json()["status"] == "stopping"
        end = event_of(list(events)[-1])  # a budget of 199 tokens: only the handoff ends it soon
        for response, _ in held:
            response.close()
    assert isinstance(end, End) and end.reason is EndReason.HANDOFF
    after = counters(url)
    assert after["forwards"] - before["forwards"] == 2  # the 4th request tried all three
    assert after["upstream_rejections"] - before["upstream_rejections"] == 3
    assert after["rejected_requests"] - before["rejected_requests"] == 1
    assert all(wait_for(lambda c=c: idle(c)) for c in clouds)


def test_same_request_id_from_two_callers_each_handoff_stops_its_own(fleet):
    url, clouds = fleet
    with httpx.Client(timeout=60.0) as client:
        (a, a_events), (b, b_events) = (open_pd_stream(client, url, "same-id") for _ in range(2))
        assert a.headers["x-pdd-upstream"] != b.headers["x-pdd-upstream"]
        secret_a = {REQUEST_SECRET_HEADER: a.headers[REQUEST_SECRET_HEADER]}
        handoff = client.post(
            url + "/v1/pd/requests/same-id/handoff", json={"at_index": 1}, headers=secret_a
        )
        assert handoff.status_code == 200
        a_end = event_of(list(a_events)[-1])
        assert a_end.reason is EndReason.HANDOFF
        assert isinstance(event_of(next(b_events)), Token), "A's handoff stopped B"
        stranger = client.post(url + "/v1/pd/requests/same-id/handoff", json={"at_index": 1})
        assert stranger.status_code == 404  # no secret: not A's, not B's
        assert isinstance(event_of(next(b_events)), Token)
        a.close()
        b.close()
    assert all(wait_for(lambda c=c: idle(c)) for c in clouds)


@pytest.mark.parametrize(
    "content",
    [b"[" * 10_000 + b"]" * 10_000, b'{"prompt": ' * 5_000 + b"1" + b"}" * 5_000, b"{not json"],
    ids=["deep-list", "deep-object", "broken"],
)
def test_malformed_bodies_get_the_instances_json_400(fleet, content):
    url, clouds = fleet
    via_gateway = httpx.post(url + "/v1/pd/generate", content=content)
    direct = httpx.post(clouds[0].http_url + "/v1/pd/generate", content=content)
    assert via_gateway.status_code == direct.status_code == 400
    assert via_gateway.json() == direct.json()


def idle(cloud: EmbeddedCloud) -> bool:
    return httpx.get(cloud.http_url + "/health").json()["active_requests"] == 0


def test_killed_instance_mid_run_every_answer_completes(loaded_model, reference):
    with fleet_of_three() as (url, clouds):  # its own: it kills an instance
        assert_killed_instance_mid_run(url, clouds, loaded_model, reference)


def assert_killed_instance_mid_run(url, clouds, loaded_model, reference) -> None:
    clients = [
        DeviceClient(url, model=loaded_model, device_slowdown=3.0, settings=fast_pacing())
        for _ in range(3)
    ]
    killed: list[EmbeddedCloud] = []

    def kill_a_busy_instance() -> None:
        busy = [c for c in clouds if httpx.get(c.http_url + "/health").json()["active_requests"]]
        busy[0].kill()
        killed.append(busy[0])

    async def run_one(client: DeviceClient):
        answer = client.answer(PROMPT, max_tokens=MAX_TOKENS, mode="pd")
        async for token in answer:
            if token.source == "cloud" and not killed:
                kill_a_busy_instance()
        return answer.result

    async def run_all() -> list:
        return await asyncio.gather(*(run_one(c) for c in clients))

    results = asyncio.run(run_all())
    assert killed, "no instance was killed: no cloud token was shown"
    assert [r.token_ids for r in results] == [reference] * 3
    assert any(r.fallback for r in results), "the killed instance's answer finished on the device"
    assert metric(url, "pdd_gateway_upstream_failures_total", 'kind="stream"') >= 1
    assert wait_for(lambda: metric(url, "pdd_gateway_healthy_upstreams") == 2, 15.0)

    more = asyncio.run(run_all())  # two instances left, one slot each: one answer is forwarded
    assert [r.token_ids for r in more] == [reference] * 3
    assert metric(url, "pdd_gateway_forwards_total") >= 1
    for client in clients:
        client.close()
