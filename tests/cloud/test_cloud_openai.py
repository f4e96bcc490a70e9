"""The OpenAI-compatible API, driven by the official ``openai`` package against a real server."""

from __future__ import annotations

import openai
import pytest
from cloud_clients import API_KEY

from common.model import DEFAULT_MODEL

STORY = "Once upon a time"


@pytest.fixture(scope="module")
def client(secured_cloud) -> openai.OpenAI:
    return openai.OpenAI(base_url=secured_cloud.http_url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def model(client) -> str:
    return client.models.list().data[0].id


def test_models_lists_the_served_model(model):
    assert model == DEFAULT_MODEL


def test_completion_non_streaming_has_text_usage_and_length_finish(client, model):
    out = client.completions.create(model=model, prompt=STORY, max_tokens=8, temperature=0)
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].text.strip()
    assert out.usage.completion_tokens == 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + 8 > 8


def test_completion_streaming_equals_non_streaming_and_ends_with_usage(client, model):
    args = {"model": model, "prompt": STORY, "max_tokens": 8, "temperature": 0}
    whole = client.completions.create(**args).choices[0].text
    chunks = list(
        client.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8


def test_stop_string_cuts_the_text_before_the_match(client, model):
    args = {"model": model, "prompt": STORY, "max_tokens": 16, "temperature": 0}
    whole = client.completions.create(**args).choices[0].text
    word = whole.split()[2]  # a word in the middle of the greedy answer
    cut = client.completions.create(**args, stop=[word])
    assert cut.choices[0].text == whole[: whole.index(word)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 16
    streamed = client.completions.create(**args, stop=word, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_chat_streaming_and_not_agree_and_seeded_sampling_repeats(client, model):
    messages = [{"role": "user", "content": "Name a colour."}]
    args = {"model": model, "messages": messages, "max_tokens": 8, "temperature": 0.9, "seed": 3}
    first = client.chat.completions.create(**args)
    again = client.chat.completions.create(**args)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(**args, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == first.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_errors_use_openai_shape_with_4xx(client, model, secured_cloud):
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="no-such-model", prompt=STORY, max_tokens=4)
    assert "GET /v1/models" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=model, prompt=STORY, max_tokens=4, n=2)
    assert err.value.body["type"] == "invalid_request_error"
    bad_key = openai.OpenAI(base_url=secured_cloud.http_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
