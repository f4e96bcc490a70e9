"""Turn-by-turn token ids against the chat template's own rendering of the whole history."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
from support import fast_pacing

from common.profiles import PrefillCost
from common.settings import Bucket, SplitSettings, equivalent_prompt_len
from device_client.chat_turns import TurnBuilder
from device_client.client import DeviceClient

ANSWERS = ["Paris is the capital.", " Berlin, I think!", "Rome\n\nand more."]
QUESTIONS = ["Capital of France?", "And Germany?", "And Italy?", "Thanks."]


@pytest.mark.parametrize("system", [None, "You are terse."])
def test_turn_by_turn_ids_equal_the_template(loaded_model, system):
    tok = loaded_model.tokenizer
    turns = TurnBuilder(tok, system)
    assert turns.check.is_incremental, turns.check.reason
    ids = turns.first_prompt(QUESTIONS[0])
    messages, spans = [], []
    for question, answer, nxt in zip(QUESTIONS, ANSWERS, QUESTIONS[1:], strict=False):
        answer_ids = turns.encode_content(answer)
        spans.append((len(ids), len(ids) + len(answer_ids)))
        ids = ids + answer_ids + turns.closing_ids
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        step = turns.next_prompt(ids, messages, spans, nxt)
        assert step.rerendered is None
        head = [{"role": "system", "content": system}] if system else []
        rendered = tok.apply_chat_template(
            head + messages + [{"role": "user", "content": nxt}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        assert step.token_ids == list(rendered)
        ids = step.token_ids


def test_answer_ids_are_kept_not_retokenized(loaded_model):
    """A model may produce ids its tokenizer would not: they stay as produced."""
    turns = TurnBuilder(loaded_model.tokenizer)
    ids = turns.first_prompt("Spell it.")
    odd = turns.encode_content("a") + turns.encode_content("b")  # "ab" tokenizes otherwise
    assert turns.encode_content("ab") != odd
    history = ids + odd + turns.closing_ids
    messages = [{"role": "user", "content": "Spell it."}, {"role": "assistant", "content": "ab"}]
    step = turns.next_prompt(history, messages, [(len(ids), len(ids) + len(odd))], "Again.")
    assert step.rerendered is None and step.token_ids[: len(history)] == history


def _with_template(loaded_model, template: str):
    tok = copy.deepcopy(loaded_model.tokenizer)
    tok.chat_template = template
    return replace(loaded_model, tokenizer=tok)


def test_a_template_that_is_not_incremental_is_rerendered(loaded_model):
    """Marking the last message differently breaks turn-by-turn ids: detected, said, and each
    turn is the template's own rendering, reusing the cache only up to the first difference."""
    template = loaded_model.tokenizer.chat_template.replace(
        "'<|im_start|>' + message['role']",
        "'<|im_start|>' + message['role'] + ('*' if loop.last else '')",
    )
    lm = _with_template(loaded_model, template)
    client = DeviceClient(None, model=lm, settings=fast_pacing(cloud_tokens=4))
    scratch = DeviceClient(None, model=lm)
    try:
        chat = client.session()
        assert not chat.template_check.is_incremental and chat.template_check.reason
        for question in QUESTIONS[:3]:
            result = chat.generate(question, max_tokens=5, mode="device")
            prompt = chat.token_ids[: chat.turns[-1].prompt_tokens]
            rendered = lm.tokenizer.apply_chat_template(
                chat.messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=False
            )
            assert prompt == list(rendered)
            ref = scratch.generate(prompt_ids=prompt, max_tokens=5, mode="device")
            assert result.token_ids == ref.token_ids
        assert chat.turns[-1].rerendered
        assert 0 < chat.turns[-1].cached_prompt_tokens < chat.turns[-1].prompt_tokens
    finally:
        client.close()
        scratch.close()


def test_settings_bucket_follows_the_uncached_tokens():
    short = Bucket(
        max_prompt_len=64, use_cloud=False, cloud_tokens=0, min_interval_s=0, max_interval_s=1
    )
    long = Bucket(max_prompt_len=4096, cloud_tokens=32, min_interval_s=0, max_interval_s=1)
    settings = SplitSettings(buckets=[short, long])
    assert settings.bucket_for(1500) is long
    assert settings.bucket_for(1500, num_device_cached=1470) is short
    assert settings.bucket_for(1500, num_device_cached=500) is long
    assert settings.bucket_for(10, num_device_cached=10) is short


def test_bucket_counts_the_cached_context_a_follow_up_attends_to():
    """New tokens after a long cached context cost the device more than the same tokens alone
    (attention over the cache): given its prefill cost, the bucket is the fresh length that
    takes as long, so a follow-up gets the N that covers its real prefill time."""
    short = Bucket(max_prompt_len=256, cloud_tokens=4, min_interval_s=0, max_interval_s=1)
    long = Bucket(max_prompt_len=4096, cloud_tokens=64, min_interval_s=0, max_interval_s=1)
    settings = SplitSettings(buckets=[short, long])
    phone = PrefillCost(a=0.1, b=0.01, c=1e-5)  # 200 new after 6000 cached ~ a fresh 1200
    assert equivalent_prompt_len(200, 6000, phone) == 1200
    assert phone.time(1200) == pytest.approx(phone.extend_time(200, 6000))
    assert settings.bucket_for(6200, num_device_cached=6000) is short  # new tokens alone
    assert settings.bucket_for(6200, num_device_cached=6000, prefill=phone) is long
    assert settings.bucket_for(6200, 6000, PrefillCost(a=0.1, b=0.01)) is short  # no attention term
    assert settings.bucket_for(200, 0, phone) is short  # nothing cached: the prompt itself
