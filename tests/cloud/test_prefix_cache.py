"""The cloud's prefix cache: alone (no model), and in the engine on the real model."""

from __future__ import annotations

import asyncio

import openai
import torch
from support import end_of, grpc_events

from cloud_server.config import EngineConfig
from cloud_server.engine import Engine
from cloud_server.prefix_cache import PrefixCache
from common.messages import End, FirstToken, GenerateRequest, Token


def kv(num_tokens: int, fill: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two layers of [1, 1, T, 2] fp32: 16 bytes per token per layer, 32 per token in all."""
    return [(torch.full((1, 1, num_tokens, 2), fill), torch.full((1, 1, num_tokens, 2), fill))] * 2


def test_lookup_finds_the_longest_prefix_and_leaves_the_last_token():
    cache = PrefixCache(max_bytes=10_000)
    cache.insert([1, 2, 3, 4], kv(4, 1.0))
    cache.insert([1, 2, 9], kv(3, 2.0))
    num, got = cache.lookup([1, 2, 3, 4, 5], max_tokens=4)
    assert num == 4 and got[0][0].shape[2] == 4 and float(got[0][0].max()) == 1.0
    assert cache.lookup([1, 2, 3, 4], max_tokens=3)[0] == 3  # a whole repeat leaves one
    assert cache.lookup([1, 2, 9, 9], max_tokens=3)[0] == 3
    assert cache.lookup([7, 1, 2], max_tokens=2) == (0, None)


def test_budget_evicts_the_least_recently_used_and_an_extension_replaces_its_prefix():
    cache = PrefixCache(max_bytes=32 * 10)  # room for 10 tokens
    cache.insert([1, 2, 3], kv(3))
    cache.insert([4, 5, 6], kv(3))
    cache.insert([1, 2, 3, 7], kv(4))  # holds all of [1, 2, 3]: that entry goes
    assert (cache.num_entries, cache.num_bytes) == (2, 32 * 7)
    cache.lookup([4, 5, 6, 0], max_tokens=3)  # [4, 5, 6] is now the most recently used
    cache.insert([8, 9, 8, 9], kv(4))  # 11 tokens: [1, 2, 3, 7] is evicted, not [4, 5, 6]
    assert cache.lookup([1, 2, 3, 7, 0], max_tokens=4)[0] == 0
    assert cache.lookup([4, 5, 6, 0], max_tokens=3)[0] == 3
    cache.insert(list(range(11)), kv(11))  # larger than the whole budget: not cached
    assert cache.num_bytes == 32 * 7


def run(engine: Engine, prompt_ids: list[int]) -> tuple[list[int], End]:
    async def body() -> list:
        stream = engine.submit(GenerateRequest(prompt_ids=prompt_ids, max_tokens=8, cloud_tokens=7))
        while engine.num_active:
            engine.step()
        return [event async for event in stream]

    events = asyncio.run(body())
    return [e.token_id for e in events if isinstance(e, FirstToken | Token)], events[-1]


def test_a_repeated_prefix_prefills_only_the_new_part(loaded_model):
    history = loaded_model.encode(
        "Summarise the plot of a story where a lighthouse keeper finds a map "
        "in a bottle and sails to an island nobody has charted."
    )
    follow_up = history + loaded_model.tokenizer(" Now name the keeper.").input_ids
    cold = Engine(loaded_model, EngineConfig(prefix_cache_bytes=0))
    warm = Engine(loaded_model, EngineConfig())  # the cache is on by default
    assert run(warm, history)[1].usage.cached_tokens == 0
    prefilled_before = warm.metrics.prefill_tokens._value.get()
    tokens, end = run(warm, follow_up)
    assert tokens == run(cold, follow_up)[0]
    assert end.usage.cached_tokens == len(history)
    assert end.usage.prompt_tokens == len(follow_up)
    prefilled = warm.metrics.prefill_tokens._value.get() - prefilled_before
    assert prefilled == len(follow_up) - len(history)  # only the new part ran
    assert warm.metrics.cached_tokens._value.get() == len(history)
    again, end = run(warm, follow_up)  # the whole prompt again: only its last token runs
    assert again == tokens and end.usage.cached_tokens == len(follow_up) - 1


def test_cached_tokens_reach_the_openai_usage_and_the_grpc_end(cloud_server):
    client = openai.OpenAI(base_url=cloud_server.http_url + "/v1", api_key="none", max_retries=0)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": "Name three uses of a prefix cache, tersely."}]
    args = {"model": model, "messages": messages, "max_tokens": 3, "temperature": 0}
    client.chat.completions.create(**args)
    again = client.chat.completions.create(**args).usage
    assert again.prompt_tokens_details.cached_tokens == again.prompt_tokens - 1
    chunks = list(
        client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == again.prompt_tokens - 1
    request = GenerateRequest(messages=messages, max_tokens=2, cloud_tokens=1)
    end = end_of(grpc_events(cloud_server.grpc_target, request))
    assert end.usage.cached_tokens == end.usage.prompt_tokens - 1
