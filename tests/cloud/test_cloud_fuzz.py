"""Schema-driven fuzzing of every route in the cloud's own ``/openapi.json`` (schemathesis).

Bounded: a few hundred cases in all, answers of at most a few tokens, prompts of at most 64
tokens, a time limit per call. Every answer must be a non-5xx status the schema declares, with a
declared content type; afterwards the server is healthy and holds no request.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    status_code_conformance,
)
from server_probes import wait_for

from common.model import DEFAULT_MODEL
from device_client.embedded import EmbeddedCloud, start_cloud

MAX_ANSWER_TOKENS = 3
CALL_TIMEOUT_S = 60.0
COUNT_FIELDS = ("max_tokens", "cloud_tokens", "max_completion_tokens")
ANSWER_ROUTES = ("/v1/pd/generate", "/v1/completions", "/v1/chat/completions")
PROMPT_SOURCES = ("prompt_ids", "prompt", "messages")
VOCAB_SIZE = 49_152  # the bundled model's


@pytest.fixture(scope="module")
def fuzzed_cloud() -> Iterator[EmbeddedCloud]:
    cloud = start_cloud("--max-concurrent", "4", "--max-prompt-tokens", "64")
    yield cloud
    try:  # after every case: still serving, nothing left running
        assert httpx.get(cloud.http_url + "/health", timeout=10.0).status_code == 200
        active = lambda: httpx.get(cloud.http_url + "/health").json()["active_requests"]  # noqa: E731
        assert wait_for(lambda: active() == 0, 10.0), "a fuzzed request was left running"
    finally:
        cloud.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_cloud: EmbeddedCloud):
    api = schemathesis.openapi.from_url(fuzzed_cloud.http_url + "/openapi.json")
    api.hook(map_body)
    return api


def map_body(context, body):
    """Keep answers short (the schema allows max_tokens up to the context; fuzzing needs 3), and
    let most cases reach the engine: the served model's name, one prompt source (two are a 400
    the schema cannot express)."""
    if not isinstance(body, dict) or context.operation.path not in ANSWER_ROUTES:
        return body
    for name in COUNT_FIELDS:
        if isinstance(body.get(name), int) and not isinstance(body[name], bool):
            body[name] = min(body[name], MAX_ANSWER_TOKENS)
    for name in ("prompt_ids", "prompt"):  # ids inside the vocabulary, so some reach the model
        if isinstance(body.get(name), list) and all(type(i) is int for i in body[name]):
            body[name] = [abs(i) % VOCAB_SIZE for i in body[name]]
    if context.operation.path == "/v1/pd/generate":
        sources = [k for k in PROMPT_SOURCES if body.get(k) is not None]
        for extra in sources[1:]:
            del body[extra]
    else:
        if body.get("max_tokens") is None:
            body["max_tokens"] = MAX_ANSWER_TOKENS  # the chat default is 512
        if isinstance(body.get("model"), str):
            body["model"] = DEFAULT_MODEL
    return body


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_route_answers_a_declared_non_5xx_status(case, fuzzed_cloud):
    response = case.call(timeout=CALL_TIMEOUT_S)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:300]}"
    case.validate_response(
        response, checks=[not_a_server_error, status_code_conformance, content_type_conformance]
    )
