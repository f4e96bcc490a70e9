"""The cloud over HTTP: a real server subprocess on loopback, the real bundled model."""

from __future__ import annotations

import threading

import httpx
import pytest
from cloud_clients import story
from httpx_sse import connect_sse
from server_probes import metric, wait_for
from support import end_of, http_events, token_ids

from cloud_server.openai_schema import ChatRequest, CompletionRequest
from common.messages import (
    EndReason,
    FirstToken,
    GenerateRequest,
    Handoff,
    KeepSet,
    Token,
    parse_event,
)
from common.wire import REQUEST_SECRET_HEADER


def test_stream_is_first_token_then_consecutive_tokens_then_end(cloud_server):
    events = http_events(cloud_server.http_url, story(max_tokens=8, cloud_tokens=7))
    first, tokens, end = events[0], events[1:-1], end_of(events)
    assert isinstance(first, FirstToken)  # no keep_set when refine_ratio is 0
    assert all(isinstance(t, Token) for t in tokens)
    assert [t.index for t in tokens] == list(range(1, 8))
    assert end.reason is EndReason.BUDGET
    assert end.usage.completion_tokens == 8
    assert end.usage.prompt_tokens == first.prompt_tokens > 0
    assert first.prefill_s > 0 and end.usage.busy_s >= first.prefill_s
    assert "".join(e.text for e in events[:-1]).strip()


def test_budget_zero_sends_only_the_first_token(cloud_server):
    events = http_events(cloud_server.http_url, story(cloud_tokens=0))
    assert [type(e).__name__ for e in events] == ["FirstToken", "End"]
    assert end_of(events).reason is EndReason.BUDGET
    assert end_of(events).usage.completion_tokens == 1


def test_budget_past_the_answer_ends_with_eos(cloud_server):
    body = {"prompt": "What is 2+2?", "max_tokens": 16, "cloud_tokens": 100}
    events = http_events(cloud_server.http_url, body)
    assert end_of(events).reason is EndReason.EOS
    assert end_of(events).usage.completion_tokens == len(token_ids(events)) < 16


def test_refine_ratio_sends_keep_set_before_first_token(cloud_server):
    events = http_events(cloud_server.http_url, story(cloud_tokens=0, refine_ratio=0.5))
    assert isinstance(events[0], KeepSet) and isinstance(events[1], FirstToken)


def test_handoff_stops_the_cloud_early(cloud_server):
    url = cloud_server.http_url
    handoffs_before = metric(url, "pdd_handoffs_total")
    body = story(max_tokens=16, cloud_tokens=15, request_id="handoff-http")
    replies, events = [], []
    with (
        httpx.Client(timeout=60.0) as client,
        connect_sse(client, "POST", url + "/v1/pd/generate", json=body) as source,
    ):
        secret = source.response.headers[REQUEST_SECRET_HEADER]
        for sse in source.iter_sse():
            events.append(parse_event(sse.event, sse.data))
            if isinstance(events[-1], Token) and events[-1].index == 2:
                replies.append(
                    client.post(
                        f"{url}/v1/pd/requests/handoff-http/handoff",
                        json={"at_index": 3},
                        headers={REQUEST_SECRET_HEADER: secret},
                    )
                )
    assert replies[0].status_code == 200 and replies[0].json()["status"] == "stopping"
    end = end_of(events)
    assert end.reason is EndReason.HANDOFF
    assert end.usage.completion_tokens <= 3 + 2
    assert metric(url, "pdd_handoffs_total") == handoffs_before + 1


def test_client_disconnect_cancels_the_request(cloud_server):
    url = cloud_server.http_url
    cancelled_before = metric(url, "pdd_requests_total", 'reason="cancelled"')
    body = story(max_tokens=200, cloud_tokens=199)  # ~15 s of decoding if never cancelled
    with (
        httpx.Client(timeout=60.0) as client,
        connect_sse(client, "POST", url + "/v1/pd/generate", json=body) as source,
    ):
        next(source.iter_sse())  # the first token: the request is decoding now
    cancelled = 'reason="cancelled"'
    assert wait_for(lambda: metric(url, "pdd_requests_total", cancelled) == cancelled_before + 1)
    assert wait_for(lambda: metric(url, "pdd_active_requests") == 0)


BAD_REQUESTS = [
    ({"prompt": "", "max_tokens": 4, "cloud_tokens": 1}, 400, "invalid_request", "prompt is empty"),
    ({"prompt_ids": [], "max_tokens": 4, "cloud_tokens": 1}, 400, "invalid_request", "empty"),
    ({"prompt": "hi", "max_tokens": 0, "cloud_tokens": 1}, 400, "invalid_request", "max_tokens"),
    ({"prompt": "hi", "max_tokens": 4, "cloud_tokens": -1}, 400, "invalid_request", "cloud_tokens"),
    ({"prompt": "hi", "max_tokens": 4}, 400, "invalid_request", "cloud_tokens: Field required"),
    (
        {"prompt_ids": [1] * 9000, "max_tokens": 4, "cloud_tokens": 1},
        400,
        "prompt_too_long",
        "shorten the prompt",
    ),
    (
        {"prompt_ids": [1, 10**6], "max_tokens": 4, "cloud_tokens": 1},
        400,
        "invalid_request",
        "outside the vocabulary",
    ),
    (
        {"prompt": "hi", "max_tokens": 4, "cloud_tokens": 1, "fingerprint": "0000"},
        409,
        "fingerprint_mismatch",
        "does not match",
    ),
]


@pytest.mark.parametrize(("body", "status", "code", "text"), BAD_REQUESTS)
def test_bad_request_gets_4xx_with_a_message(cloud_server, body, status, code, text):
    reply = httpx.post(cloud_server.http_url + "/v1/pd/generate", json=body, timeout=30.0)
    assert reply.status_code == status
    assert reply.json()["error"]["code"] == code
    assert text in reply.json()["error"]["message"]
    assert httpx.get(cloud_server.http_url + "/health").status_code == 200


@pytest.mark.parametrize(
    ("content", "text"),
    [
        (
            b'{"prompt": "hi", "max_tokens": "5", "cloud_tokens": 1}',
            "max_tokens: Input should be a valid integer",
        ),
        (
            b'{"prompt": "hi", "max_tokens": true, "cloud_tokens": 1}',
            "max_tokens: Input should be a valid integer",
        ),
        (
            b'{"prompt": "hi", "max_tokens": 4, "cloud_tokens": 1.0}',
            "cloud_tokens: Input should be a valid integer",
        ),
        (
            b'{"prompt": "hi", "max_tokens": 4, "cloud_tokens": 1, "sampling": {"temperature": NaN}}',
            "sampling.temperature: Input should be a finite number",
        ),
    ],
)
def test_non_integer_counts_and_nan_are_refused_by_name(cloud_server, content, text):
    reply = httpx.post(cloud_server.http_url + "/v1/pd/generate", content=content)
    assert reply.status_code == 400
    assert text in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "text"),
    [(b"{not json", "Invalid JSON"), (b"[1, 2]", "should be an object"), (b"", "Invalid JSON")],
)
def test_malformed_json_gets_400(cloud_server, content, text):
    reply = httpx.post(cloud_server.http_url + "/v1/pd/generate", content=content)
    assert reply.status_code == 400
    assert text in reply.json()["error"]["message"]


def test_a_refused_request_is_counted_once(cloud_server):
    url = cloud_server.http_url
    code = 'reason="fingerprint_mismatch"'
    rejected_before = metric(url, "pdd_rejected_requests_total", code)
    reply = httpx.post(url + "/v1/pd/generate", json=story(fingerprint="0000"))
    assert reply.status_code == 409
    assert metric(url, "pdd_rejected_requests_total", code) == rejected_before + 1


def test_handoff_for_an_unknown_request_is_404(cloud_server):
    url = cloud_server.http_url + "/v1/pd/requests/never-sent/handoff"
    reply = httpx.post(url, json={"at_index": 1})
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "unknown_request"
    assert "never-sent" in reply.json()["error"]["message"]
    reply = httpx.post(url, json={"at_index": -1})
    assert reply.status_code == 400 and "at_index" in reply.json()["error"]["message"]


def test_health_and_metrics(cloud_server, loaded_model):
    health = httpx.get(cloud_server.http_url + "/health").json()
    assert health["model"] == "smollm2-135m"
    assert health["fingerprint"] == loaded_model.fingerprint
    text = httpx.get(cloud_server.http_url + "/metrics").text
    for name in (
        "pdd_ttft_seconds_bucket",
        "pdd_prefill_seconds_bucket",
        "pdd_cloud_tokens_bucket",
        "pdd_busy_seconds_bucket",
        "pdd_active_requests",
        "pdd_rejected_requests_total",
        "pdd_handoffs_total",
        "pdd_requests_total",
    ):
        assert name in text, name


def test_concurrent_streams_each_get_their_own_answer(cloud_server):
    url = cloud_server.http_url
    alone = token_ids(http_events(url, story(max_tokens=6, cloud_tokens=5)))
    results: list[list[int]] = [[], []]

    def one(i: int) -> None:
        results[i] = token_ids(http_events(url, story(max_tokens=6, cloud_tokens=5)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [alone, alone]


def test_a_huge_prompt_is_refused_on_its_size_before_tokenizing(cloud_server):
    body = story(prompt="lorem ipsum " * 75_000)  # 900 kB: under the body limit, over any context
    reply = httpx.post(cloud_server.http_url + "/v1/pd/generate", json=body, timeout=30.0)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "prompt_too_long"
    assert "900000 bytes" in reply.json()["error"]["message"]  # counted, not tokenized


def test_openapi_describes_bodies_real_statuses_and_streams(cloud_server):
    spec = httpx.get(cloud_server.http_url + "/openapi.json").json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    routes = {
        ("/v1/pd/generate", "post"): (GenerateRequest, {"text/event-stream"}, "409"),
        ("/v1/pd/requests/{request_id}/handoff", "post"): (Handoff, {"application/json"}, "404"),
        ("/v1/completions", "post"): (
            CompletionRequest,
            {"application/json", "text/event-stream"},
            "429",
        ),
        ("/v1/chat/completions", "post"): (
            ChatRequest,
            {"application/json", "text/event-stream"},
            "429",
        ),
    }
    for (path, method), (model, ok_types, status) in routes.items():
        op = paths[path][method]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model.__name__}"
        # the very schema the handler validates with
        want = model.model_json_schema(ref_template="#/components/schemas/{model}")
        want.pop("$defs", None)
        assert schemas[model.__name__] == want
        assert set(op["responses"]["200"]["content"]) == ok_types
        assert {"400", "401", "413", status} <= set(op["responses"])
    for methods in paths.values():
        for op in methods.values():
            assert "422" not in op["responses"], "the server answers 400, never 422"
