"""Session bookkeeping on the device alone: memory, eviction, closing, overflow, early stops."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common.errors import InvalidRequest
from device_client.client import DeviceClient
from device_client.session import ContextOverflow

MAX_TOKENS = 5


def check_turn(chat, result, reference) -> None:
    prompt = chat.token_ids[: chat.turns[-1].prompt_tokens]
    assert result.token_ids == reference(prompt, MAX_TOKENS)


def test_kv_size_per_token(make_client, loaded_model):
    """46,080 bytes a token for SmolLM2-135M in fp32: 46.1 MB (43.9 MiB) per 1,000 tokens."""
    cfg = loaded_model.model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * 4
    assert per_token == 46_080
    chat = make_client(None).session()
    chat.generate("Say hello.", max_tokens=MAX_TOKENS, mode="device")
    assert chat.num_cached_tokens > 20
    assert chat.kv_bytes == chat.num_cached_tokens * per_token


def test_the_oldest_session_is_evicted_and_prefills_again(make_client, reference):
    client = make_client(None, max_sessions=2)
    chats = [client.session() for _ in range(3)]
    for i, chat in enumerate(chats):
        chat.generate(f"Name {i + 2} fruits.", max_tokens=MAX_TOKENS, mode="device")
    assert [c.kv_bytes > 0 for c in chats] == [False, True, True]
    again = chats[0].generate("And one vegetable?", max_tokens=MAX_TOKENS, mode="device")
    assert again.cached_prompt_tokens == 0, "its cache was evicted: the history is prefilled"
    check_turn(chats[0], again, reference)
    assert [c.kv_bytes > 0 for c in chats] == [True, False, True]


def test_a_closed_session_takes_no_turns(make_client):
    chat = make_client(None).session()
    chat.generate("Hi.", max_tokens=MAX_TOKENS, mode="device")
    chat.close()
    assert chat.kv_bytes == 0
    with pytest.raises(InvalidRequest, match="closed"):
        chat.generate("Still there?", max_tokens=MAX_TOKENS, mode="device")


def test_context_overflow_says_what_to_do_and_keeps_the_session(loaded_model, reference):
    client = DeviceClient(None, model=replace(loaded_model, max_context=160))
    try:
        chat = client.session()
        chat.generate("Name a colour.", max_tokens=MAX_TOKENS, mode="device")
        ids, cached = list(chat.token_ids), chat.num_cached_tokens
        with pytest.raises(ContextOverflow, match="Start a new session") as err:
            chat.generate("tell me more " * 40, max_tokens=MAX_TOKENS, mode="device")
        assert "context of 160 tokens" in err.value.message
        assert chat.token_ids == ids and chat.num_cached_tokens == cached
        result = chat.generate("Another?", max_tokens=MAX_TOKENS, mode="device")
        assert result.cached_prompt_tokens == cached
        check_turn(chat, result, reference)
    finally:
        client.close()


def test_a_stream_stopped_early_keeps_what_was_shown(make_client, reference):
    chat = make_client(None).session()
    shown = []
    for tok in chat.stream("Count from one to twenty.", max_tokens=40, mode="device"):
        shown.append(tok.token_id)
        if len(shown) == 3:
            break
    assert chat.turns[-1].answer_tokens == 3
    start = chat.turns[-1].prompt_tokens
    assert chat.token_ids[start : start + 3] == shown
    assert chat.messages[-1]["role"] == "assistant"
    result = chat.generate("Go on.", max_tokens=MAX_TOKENS, mode="device")
    check_turn(chat, result, reference)
    # The device may have decoded past what was shown; the cache keeps only the history.
    assert result.cached_prompt_tokens <= start + 3


def test_one_turn_at_a_time(make_client):
    chat = make_client(None).session()
    stream = chat.stream("Hello.", max_tokens=MAX_TOKENS, mode="device")
    next(stream)
    with pytest.raises(InvalidRequest, match="one turn at a time"):
        chat.generate("And?", max_tokens=MAX_TOKENS, mode="device")
    stream.close()
    chat.generate("And?", max_tokens=MAX_TOKENS, mode="device")
