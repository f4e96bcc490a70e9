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
