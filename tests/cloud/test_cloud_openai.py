"""The OpenAI-compatible API, driven by the official ``openai`` package against a real server."""

from __future__ import annotations

import httpx
import openai
import pytest
import torch
from cloud_clients import API_KEY
from server_probes import metric, wait_for

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
    # The same seeded answer ends the same way; "length" exactly when all 8 tokens were used.
    finish = first.choices[0].finish_reason
    assert chunks[-1].choices[0].finish_reason == finish
    assert (finish == "length") == (first.usage.completion_tokens == 8)


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


def test_chat_finish_reason_is_stop_when_the_model_ends_the_answer(client, model):
    messages = [{"role": "user", "content": "What is 2+2? Answer with one number."}]
    out = client.chat.completions.create(
        model=model, messages=messages, max_tokens=64, temperature=0
    )
    assert out.choices[0].finish_reason == "stop" and out.usage.completion_tokens < 64


def test_ignore_eos_decodes_to_max_tokens(client, model):
    """vLLM's ``ignore_eos`` (its benchmark client sends it with random prompts): the answer
    that ends by itself above runs on to max_tokens."""
    messages = [{"role": "user", "content": "What is 2+2? Answer with one number."}]
    args = {"model": model, "messages": messages, "max_tokens": 24, "temperature": 0}
    ended = client.chat.completions.create(**args)
    assert ended.choices[0].finish_reason == "stop" and ended.usage.completion_tokens < 24
    out = client.chat.completions.create(**args, extra_body={"ignore_eos": True})
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 24
    same = client.chat.completions.create(**args, extra_body={"ignore_eos": False})
    assert same.choices[0].message.content == ended.choices[0].message.content


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1.0}, "frequency_penalty"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"extra_body": {"guided_json": {}}}, "guided_json"),
    ],
)
def test_parameters_that_are_not_implemented_are_refused_by_name(client, model, params, named):
    messages = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=messages, max_tokens=2, **params)
    assert named in err.value.body["message"]


def test_neutral_values_of_unimplemented_parameters_are_accepted(client, model):
    out = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        presence_penalty=0,
        frequency_penalty=0.0,
        response_format={"type": "text"},
        user="someone",
    )
    assert out.usage.completion_tokens == 2


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ('"max_tokens": "5"', "max_tokens: Input should be a valid integer"),
        ('"max_tokens": true', "max_tokens: Input should be a valid integer"),
        ('"temperature": NaN', "temperature: Input should be a finite number"),
    ],
)
def test_non_integer_counts_and_nan_are_refused(secured_cloud, model, field, text):
    content = f'{{"model": "{model}", "prompt": "{STORY}", {field}}}'
    reply = httpx.post(
        secured_cloud.http_url + "/v1/completions",
        content=content,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert reply.status_code == 400
    assert text in reply.json()["error"]["message"]


def test_chat_logprobs_are_the_models_and_greedy_picks_the_top_one(client, model):
    args = {
        "model": model,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 6,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 3,
    }
    out = client.chat.completions.create(**args)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens == 6
    assert "".join(c.token for c in content) == out.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.top_logprobs[0].token == entry.token  # greedy: the most likely token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert entry.bytes == list(entry.token.encode())
    streamed = [
        c
        for chunk in client.chat.completions.create(**args, stream=True)
        if chunk.choices and chunk.choices[0].logprobs
        for c in chunk.choices[0].logprobs.content
    ]
    assert [(c.token, c.logprob) for c in streamed] == [(c.token, c.logprob) for c in content]
    without = client.chat.completions.create(**args | {"logprobs": None, "top_logprobs": None})
    assert without.choices[0].logprobs is None


def test_completion_echo_with_logprobs_scores_the_prompt(client, model, loaded_model):
    out = client.completions.create(
        model=model, prompt=STORY, max_tokens=3, temperature=0, logprobs=2, echo=True
    )
    choice, usage = out.choices[0], out.usage
    assert choice.text.startswith(STORY) and len(choice.text) > len(STORY)
    lp = choice.logprobs
    assert len(lp.tokens) == usage.prompt_tokens + usage.completion_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing to condition on
    assert "".join(lp.tokens[: usage.prompt_tokens]) == STORY
    assert lp.text_offset[1] == len(lp.tokens[0])
    # The prompt's logprobs are the model's own: one forward over the prompt here.
    ids = loaded_model.encode(prompt=STORY, raw=True)
    with torch.inference_mode():
        logits = loaded_model.model(input_ids=torch.tensor([ids])).logits[0].float()
    want = torch.log_softmax(logits, dim=-1)
    for i in range(1, len(ids)):
        assert lp.token_logprobs[i] == pytest.approx(float(want[i - 1, ids[i]]), abs=1e-4)
        assert len(lp.top_logprobs[i]) == 2
    plain = client.completions.create(
        model=model, prompt=STORY, max_tokens=3, temperature=0, echo=True
    )
    assert plain.choices[0].text == choice.text and plain.choices[0].logprobs is None


def test_abandoned_non_streaming_request_frees_its_slot(secured_cloud, model):
    url = secured_cloud.http_url
    cancelled = 'reason="cancelled"'
    before = metric(url, "pdd_requests_total", cancelled)
    body = {"model": model, "messages": [{"role": "user", "content": "Tell a long story."}]}
    body |= {"max_tokens": 400, "temperature": 0.8, "seed": 1}  # ~30 s of decoding if kept
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=httpx.Timeout(10.0, read=2.0),
        )
    assert wait_for(lambda: metric(url, "pdd_requests_total", cancelled) == before + 1, 10.0)
    assert wait_for(lambda: metric(url, "pdd_active_requests") == 0, 5.0)
