"""The pd guarantees on the vLLM engine, over HTTP and gRPC, against the transformers device."""

from __future__ import annotations

import threading

import grpc
import httpx
import pytest
from httpx_sse import connect_sse
from support import (
    assert_pd_matches_device_only,
    end_of,
    grpc_events,
    http_events,
    index_of,
    token_ids,
)
from vllm_helpers import MAX_CONCURRENT, STORY, wait_idle

from common.messages import GenerateRequest, KeepSet, SamplingParams
from common.wire import REQUEST_SECRET_HEADER

MAX_TOKENS = 24
LONG_PROMPT = (
    "Here are some notes about a small town.\n"
    "The town of Alder Creek sits in a valley between two ridges. It has one bakery, run by a "
    "woman named Mira, who opens at five every morning. The library is open on weekdays and "
    "holds about four thousand books. A river runs along the east side of the town.\n"
    "Question: who runs the bakery, and when does it open? Answer in two sentences."
)
PROMPTS = [
    "Name three primary colours.",
    "Why is the sky blue?",
    "Write a haiku about a cat that sleeps in the sun.",
]


# ---- greedy and seeded answers: pd on vLLM == device-only on transformers --------------------


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("cloud_tokens", [0, 4, 200])
def test_pd_matches_device_only(vllm_cloud, make_client, reference, transport, cloud_tokens):
    """Budgets from 0 to past the answer: the handoff loses and duplicates nothing (the same
    check as the builtin engine's, tests/device/test_device_equivalence.py)."""
    url = vllm_cloud.grpc_url if transport == "grpc" else vllm_cloud.http_url
    client = make_client(url, device_slowdown=3.0, prefill_chunk_tokens=16)
    assert_pd_matches_device_only(client, reference, LONG_PROMPT, MAX_TOKENS, cloud_tokens)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_cloud_only_greedy_matches_device_only(vllm_cloud, make_client, reference, prompt):
    """The whole greedy answer from vLLM's kernels equals transformers' (no near-tie split)."""
    result = make_client(vllm_cloud.http_url).generate(prompt, max_tokens=48, mode="cloud")
    assert result.fallback is None
    assert set(result.sources) == {"cloud"}
    assert result.token_ids == reference(prompt, 48)


def test_seeded_sampling_is_identical_across_the_handoff(vllm_cloud, make_client, reference):
    """Our sampler runs inside vLLM (PdSampler): token i is drawn from (seed, i) on both sides."""
    sampling = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=7)
    want = reference(LONG_PROMPT, MAX_TOKENS, sampling)
    assert want != reference(LONG_PROMPT, MAX_TOKENS), "sampling should differ from greedy"
    client = make_client(vllm_cloud.grpc_url, device_slowdown=3.0, prefill_chunk_tokens=16)
    pd = client.generate(
        LONG_PROMPT, max_tokens=MAX_TOKENS, mode="pd", cloud_tokens=6, sampling=sampling
    )
    cloud = client.generate(LONG_PROMPT, max_tokens=MAX_TOKENS, mode="cloud", sampling=sampling)
    assert pd.handoff_index and pd.handoff_index < MAX_TOKENS, "the test needs a real split"
    assert pd.token_ids == want
    assert cloud.token_ids == want


def test_refinement_says_it_is_unavailable(vllm_cloud, make_client, reference):
    """vLLM cannot score prompts: the keep-set says so and the device prefills everything."""
    events = http_events(
        vllm_cloud.http_url, STORY | {"max_tokens": 2, "cloud_tokens": 1} | {"refine_ratio": 0.5}
    )
    assert isinstance(events[0], KeepSet)
    assert not events[0].is_available and "cannot score" in events[0].reason
    client = make_client(vllm_cloud.http_url, device_slowdown=3.0, prefill_chunk_tokens=16)
    result = client.generate(
        LONG_PROMPT, max_tokens=MAX_TOKENS, mode="pd", cloud_tokens=6, refine_ratio=0.5
    )
    assert result.kept_prompt_tokens == result.prompt_tokens
    assert result.token_ids == reference(LONG_PROMPT, MAX_TOKENS)


# ---- budget, handoff, disconnect --------------------------------------------------------------


def test_budget_is_first_token_plus_n(vllm_cloud):
    events = http_events(vllm_cloud.http_url, STORY | {"max_tokens": 50, "cloud_tokens": 5})
    assert len(token_ids(events)) == 6
    end = end_of(events)
    assert end.reason == "budget" and end.usage.completion_tokens == 6
    assert end.usage.busy_s > 0 and end.usage.prefill_s > 0


def test_http_handoff_stops_the_cloud_early(vllm_cloud):
    """The cloud produced at most m + 2 tokens: vLLM's abort lands within a decode step."""
    m = 3
    body = STORY | {"request_id": "vllm-handoff-http", "max_tokens": 300, "cloud_tokens": 299}

    def on_event(event, headers) -> None:
        if index_of(event) == m - 1:
            reply = httpx.post(
                f"{vllm_cloud.http_url}/v1/pd/requests/vllm-handoff-http/handoff",
                json={"at_index": m},
                headers={REQUEST_SECRET_HEADER: headers[REQUEST_SECRET_HEADER]},  # its caller only
            )
            assert reply.json()["status"] in ("stopping", "finished")

    end = end_of(http_events(vllm_cloud.http_url, body, on_event))
    assert end.reason == "handoff"
    assert end.usage.completion_tokens <= m + 2


def test_grpc_handoff_stops_the_cloud_early(vllm_cloud):
    m = 4
    request = GenerateRequest(prompt="Once upon a time", raw=True, max_tokens=300, cloud_tokens=299)
    events = grpc_events(vllm_cloud.grpc_target, request, handoff_at=m)
    end = end_of(events)
    assert end.reason == "handoff"
    assert end.usage.completion_tokens <= m + 2


def test_disconnect_frees_the_slot(vllm_cloud):
    body = STORY | {"max_tokens": 300, "cloud_tokens": 299}
    with (
        httpx.Client(timeout=60.0) as client,
        connect_sse(client, "POST", vllm_cloud.http_url + "/v1/pd/generate", json=body) as source,
    ):
        for sse in source.iter_sse():
            if sse.event == "token":
                break  # closing the connection cancels the request
    assert wait_idle(vllm_cloud.http_url)


# ---- admission and bad input ------------------------------------------------------------------


def test_overload_is_rejected_at_once(vllm_cloud):
    """Past max-concurrent the request is refused (429 + Retry-After, RESOURCE_EXHAUSTED)."""
    holders = [threading.Event() for _ in range(MAX_CONCURRENT)]
    release = threading.Event()

    def hold(started: threading.Event) -> None:
        body = STORY | {"max_tokens": 1000, "cloud_tokens": 999}
        with (
            httpx.Client(timeout=60.0) as client,
            connect_sse(client, "POST", vllm_cloud.http_url + "/v1/pd/generate", json=body) as s,
        ):
            for _ in s.iter_sse():
                started.set()
                if release.is_set():
                    return

    threads = [threading.Thread(target=hold, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    try:
        assert all(h.wait(60) for h in holders), "the held streams did not start"
        reply = httpx.post(
            vllm_cloud.http_url + "/v1/pd/generate",
            json=STORY | {"max_tokens": 4, "cloud_tokens": 3},
        )
        assert reply.status_code == 429, reply.text
        assert int(reply.headers["Retry-After"]) >= 1
        assert reply.json()["error"]["code"] == "overloaded"
        request = GenerateRequest(prompt="Hi", max_tokens=4, cloud_tokens=3)
        with pytest.raises(grpc.RpcError) as err:
            grpc_events(vllm_cloud.grpc_target, request)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        metrics = httpx.get(vllm_cloud.http_url + "/metrics").text
        assert 'pdd_rejected_requests_total{reason="overloaded"}' in metrics
    finally:
        release.set()
        for t in threads:
            t.join(60)
    assert wait_idle(vllm_cloud.http_url)


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"fingerprint": "not-this-model"}, 409, "fingerprint_mismatch"),
        ({"prompt_ids": [1, 10**9], "prompt": None}, 400, "invalid_request"),
        ({"prompt": ""}, 400, "invalid_request"),
        ({"prompt": "word " * 3000}, 400, "prompt_too_long"),
        ({"cloud_tokens": -1}, 400, "invalid_request"),
    ],
)
def test_bad_input_is_a_4xx_as_on_builtin(vllm_cloud, fields, status, code):
    body = STORY | {"max_tokens": 4, "cloud_tokens": 3} | fields
    body = {k: v for k, v in body.items() if v is not None}
    reply = httpx.post(vllm_cloud.http_url + "/v1/pd/generate", json=body)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code
    events = http_events(vllm_cloud.http_url, STORY | {"max_tokens": 2, "cloud_tokens": 1})
    assert end_of(events).reason == "budget", "the server keeps serving"


def test_grpc_fingerprint_mismatch_is_invalid_argument(vllm_cloud):
    request = GenerateRequest(prompt="Hi", max_tokens=4, cloud_tokens=3, fingerprint="other")
    with pytest.raises(grpc.RpcError) as err:
        grpc_events(vllm_cloud.grpc_target, request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fingerprint" in err.value.details()


def test_health_and_metrics_on_vllm(vllm_cloud, loaded_model):
    health = httpx.get(vllm_cloud.http_url + "/health").json()
    assert health["fingerprint"] == loaded_model.fingerprint  # the device's own rule
    assert health["platform"] == "vllm-cpu"
    metrics = httpx.get(vllm_cloud.http_url + "/metrics").text
    assert "pdd_ttft_seconds_count" in metrics and "pdd_busy_seconds_count" in metrics
    assert "vllm:generation_tokens_total" in metrics  # vLLM's own, exported beside ours


def test_pd_route_logprobs_come_with_each_token(vllm_cloud):
    events = http_events(
        vllm_cloud.http_url,
        STORY | {"max_tokens": 4, "cloud_tokens": 3, "logprobs": 2, "prompt_logprobs": 1},
    )
    tokens = [e for e in events if index_of(e) is not None]
    assert len(tokens) == 4
    for event in tokens:
        assert event.logprob.token_id == event.token_id and len(event.logprob.top) == 2
        assert event.logprob.top[0].logprob >= event.logprob.top[1].logprob
    prompt = tokens[0].prompt_logprobs
    assert prompt and len(prompt) == tokens[0].prompt_tokens - 1
    assert all(len(p.top) == 1 and p.logprob <= p.top[0].logprob + 1e-6 for p in prompt)
