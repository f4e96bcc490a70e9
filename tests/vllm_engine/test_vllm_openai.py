"""The OpenAI routes on the vLLM engine, driven by the official ``openai`` client."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client(vllm_cloud):
    return openai.OpenAI(base_url=vllm_cloud.http_url + "/v1", api_key="unused", max_retries=0)


def test_chat_streams_the_greedy_answer(client, loaded_model, reference):
    model = client.models.list().data[0].id
    assert model == "smollm2-135m"
    prompt = "Why is the sky blue?"
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    want = loaded_model.tokenizer.decode(reference(prompt, 16), skip_special_tokens=True)
    assert text == want
    assert chunks[-1].usage.completion_tokens == 16
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_completion_with_a_seed_is_reproducible(client):
    def ask() -> str:
        reply = client.completions.create(
            model="smollm2-135m", prompt="Once upon a time", max_tokens=12, temperature=0.8, seed=5
        )
        return reply.choices[0].text

    first = ask()
    assert first and ask() == first


def test_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="Hi", max_tokens=2)


def greedy_logprobs(loaded_model, prompt_ids: list[int], num_tokens: int):
    """Transformers' greedy answer and each position's log-softmax (the builtin engine's)."""
    import torch

    ids, rows = list(prompt_ids), []
    with torch.inference_mode():
        for _ in range(num_tokens + 1):
            logits = loaded_model.model(input_ids=torch.tensor([ids])).logits[0].float()
            rows = torch.log_softmax(logits, dim=-1)  # [len(ids), vocab]
            if len(ids) < len(prompt_ids) + num_tokens:
                ids.append(int(rows[-1].argmax()))
    return ids[len(prompt_ids) :], rows


def test_completion_logprobs_with_echo_match_transformers(client, loaded_model):
    """vLLM's raw logprobs in OpenAI's legacy shape: close to transformers' log-softmax, the
    chosen (greedy) token is the top-1 alternative, alternatives sorted, echo gives the prompt's."""
    prompt, k, n = "Once upon a time", 3, 6
    prompt_ids = loaded_model.tokenizer(prompt).input_ids
    answer, rows = greedy_logprobs(loaded_model, prompt_ids, n)
    reply = client.completions.create(
        model="smollm2-135m", prompt=prompt, max_tokens=n, temperature=0, logprobs=k, echo=True
    )
    lp = reply.choices[0].logprobs
    ids = prompt_ids + answer
    assert lp.tokens == [loaded_model.tokenizer.decode([t]) for t in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for i in range(1, len(ids)):
        want = float(rows[i - 1, ids[i]])
        assert abs(lp.token_logprobs[i] - want) < 2e-3, (i, lp.token_logprobs[i], want)
        top = list(lp.top_logprobs[i].values())
        assert len(top) == k and top == sorted(top, reverse=True)
        if i >= len(prompt_ids):  # greedy: the chosen token is the most likely one
            assert abs(top[0] - lp.token_logprobs[i]) < 1e-6


def test_chat_logprobs_stream_in_openai_shape(client):
    chunks = list(
        client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=5,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
            stream=True,
        )
    )
    content = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert len(content) == 5
    for entry in content:
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.logprob <= entry.top_logprobs[0].logprob + 1e-6


def test_ignore_eos_decodes_to_max_tokens_on_vllm(client):
    """vLLM's benchmark client sends ``ignore_eos`` with random prompts: honoured, not refused."""
    messages = [{"role": "user", "content": "What is 2+2? Answer with one number."}]
    args = {"model": "smollm2-135m", "messages": messages, "max_tokens": 24, "temperature": 0}
    ended = client.chat.completions.create(**args)
    assert ended.choices[0].finish_reason == "stop" and ended.usage.completion_tokens < 24
    out = client.chat.completions.create(**args, extra_body={"ignore_eos": True})
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 24


def test_repetition_penalty_is_applied_by_vllm(client):
    """Penalties are vLLM's own (cloud-only answers): they change the greedy answer."""

    def ask(**extra) -> str:
        reply = client.completions.create(
            model="smollm2-135m", prompt="one, two, one, two, one,", max_tokens=16, temperature=0,
            extra_body=extra,
        )  # fmt: skip
        return reply.choices[0].text

    plain = ask()
    assert ask(repetition_penalty=1.0) == plain  # the neutral value changes nothing
    assert ask(repetition_penalty=1.8) != plain
    assert ask(presence_penalty=1.5, frequency_penalty=1.0) != plain


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"n": 2}, "n"),
        ({"extra_body": {"guided_json": {}}}, "guided_json"),
    ],
)
def test_parameters_not_offered_on_vllm_are_refused_by_name(client, params, named):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=2,
            **params,
        )
    assert named in err.value.body["message"]
