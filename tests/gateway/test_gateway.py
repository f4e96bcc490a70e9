"""The gateway over three real instances (one slot each) on loopback, with real device clients."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from httpx_sse import EventSource
from server_probes import metric, wait_for

from common.messages import End, FirstToken, parse_event
from common.settings import Bucket, SplitSettings
from device_client.client import DeviceClient
from device_client.embedded import EmbeddedCloud, free_port, start_cloud

PROMPT = "Name three primary colours."
MAX_TOKENS = 12
PD_BODY = {"prompt": "Once upon a time", "raw": True, "max_tokens": 16, "cloud_tokens": 15}
FAST_PACING = SplitSettings(
    buckets=[Bucket(max_prompt_len=1 << 20, cloud_tokens=64, min_interval_s=0, max_interval_s=0.05)]
)


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


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[str, list[EmbeddedCloud]]]:
    with ThreadPoolExecutor(3) as pool:
        clouds = list(pool.map(lambda _: start_cloud("--max-concurrent", "1"), range(3)))
    url, gateway = start_gateway(clouds)
    yield url, clouds
    gateway.terminate()
    gateway.wait(10)
    for cloud in clouds:
        cloud.stop()


@pytest.fixture(scope="module")
def reference(loaded_model) -> list[int]:
    device = DeviceClient(None, model=loaded_model)
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


def test_full_fleet_forwards_then_rejects_and_handoff_reaches_the_right_instance(fleet):
    url, clouds = fleet
    with httpx.Client(timeout=30.0) as client:
        held = [open_pd_stream(client, url, f"held-{i}") for i in range(3)]
        upstreams = {resp.headers["x-pdd-upstream"] for resp, _ in held}
        assert upstreams == {c.http_url for c in clouds}, "one request per one-slot instance"
        extra = client.post(url + "/v1/pd/generate", json=PD_BODY)  # every slot is taken
        assert extra.status_code == 429 and extra.json()["error"]["code"] == "overloaded"
        handoff = client.post(url + "/v1/pd/requests/held-1/handoff", json={"at_index": 2})
        assert handoff.status_code == 200 and handoff.json()["status"] in ("stopping", "finished")
        ends = []
        for response, events in held:
            ends.append(event_of(list(events)[-1]))
            response.close()
    assert all(isinstance(e, End) for e in ends)
    assert ends[1].reason.value in ("handoff", "budget")
    assert metric(url, "pdd_gateway_forwards_total") == 2  # the 4th request tried all three
    assert metric(url, "pdd_gateway_upstream_rejections_total") == 3
    assert metric(url, "pdd_gateway_rejected_requests_total") == 1


# Runs after the test above on the same fleet (it kills one instance).
def test_killed_instance_mid_run_every_answer_completes(fleet, loaded_model, reference):
    url, clouds = fleet
    clients = [
        DeviceClient(url, model=loaded_model, device_slowdown=3.0, settings=FAST_PACING)
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
