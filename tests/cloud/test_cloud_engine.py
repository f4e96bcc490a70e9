"""The engine in-process on the real model, driven one step at a time (no worker thread)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from cloud_server.config import EngineConfig
from cloud_server.engine import Engine
from cloud_server.engine_api import CloudEngine, RequestStream
from cloud_server.model_runner import ModelRunner
from cloud_server.scheduler import REFINE_WINDOW
from common.errors import (
    CloudUnavailable,
    FingerprintMismatch,
    InvalidRequest,
    Overloaded,
    PromptTooLong,
    UnknownRequest,
)
from common.messages import End, EndReason, FirstToken, GenerateRequest, KeepSet, Token

STORY = "Once upon a time"  # raw: the model keeps telling the story, no early EOS


def make_request(**fields) -> GenerateRequest:
    defaults = {"prompt": STORY, "raw": True, "max_tokens": 16, "cloud_tokens": 15}
    return GenerateRequest(**(defaults | fields))


def drive(engine: Engine) -> None:
    while engine.num_active:
        engine.step()


async def collect(stream: RequestStream) -> list:
    return [event async for event in stream]


def run_alone(engine: Engine, request: GenerateRequest) -> list:
    async def body() -> list:
        stream = engine.submit(request)
        drive(engine)
        return await collect(stream)

    return asyncio.run(body())


def token_ids(events: list) -> list[int]:
    return [e.token_id for e in events if isinstance(e, FirstToken | Token)]


@pytest.fixture
def engine(loaded_model) -> Engine:
    return Engine(loaded_model, EngineConfig(max_concurrent_requests=2))


def test_budget_zero_gives_exactly_the_first_token(engine):
    events = run_alone(engine, make_request(cloud_tokens=0))
    assert [type(e) for e in events] == [FirstToken, End]
    assert events[-1].reason is EndReason.BUDGET
    assert events[-1].usage.completion_tokens == 1


def test_max_tokens_caps_the_budget(engine):
    events = run_alone(engine, make_request(max_tokens=3, cloud_tokens=10))
    assert [e.index for e in events if isinstance(e, Token)] == [1, 2]
    assert events[-1].reason is EndReason.BUDGET
    assert events[-1].usage.completion_tokens == 3


def test_greedy_tokens_match_transformers_generate(engine, loaded_model):
    events = run_alone(engine, make_request(max_tokens=6, cloud_tokens=5))
    prompt = loaded_model.encode(STORY, raw=True)
    with torch.inference_mode():
        out = loaded_model.model.generate(
            torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=None
        )
    assert token_ids(events) == out[0, len(prompt) :].tolist()


def test_answer_shorter_than_budget_ends_with_eos(engine, loaded_model):
    events = run_alone(
        engine, make_request(prompt="What is 2+2?", raw=False, max_tokens=40, cloud_tokens=39)
    )
    end = events[-1]
    assert end.reason is EndReason.EOS
    assert token_ids(events)[-1] in loaded_model.eos_token_ids
    assert end.usage.completion_tokens == len(token_ids(events)) < 40


def test_handoff_stops_before_the_next_decode(engine):
    async def body() -> list:
        stream = engine.submit(make_request())
        engine.step()  # prefill: index 0
        engine.step()  # decode: index 1
        assert engine.handoff(stream.request_id, at_index=2) == "stopping"
        engine.step()
        assert engine.num_active == 0
        assert engine.handoff(stream.request_id, at_index=2) == "finished"  # a late handoff
        return await collect(stream)

    events = asyncio.run(body())
    assert events[-1].reason is EndReason.HANDOFF
    assert events[-1].usage.completion_tokens == 2
    assert "index 2" in events[-1].message


def test_handoff_during_a_decode_costs_at_most_that_step(loaded_model):
    class HandoffMidStep(ModelRunner):
        def decode(self, seqs):
            engine.handoff(seqs[0].request_id, at_index=1)  # arrives while the forward runs
            return super().decode(seqs)

    engine = Engine(loaded_model, runner=HandoffMidStep(loaded_model))
    events = run_alone(engine, make_request())
    assert events[-1].reason is EndReason.HANDOFF
    assert events[-1].usage.completion_tokens == 2  # m + 1 <= m + 2


def test_two_requests_decode_in_turns_with_their_own_caches(engine):
    alone = token_ids(run_alone(engine, make_request(max_tokens=5, cloud_tokens=4)))

    async def body() -> tuple[list, list]:
        a = engine.submit(make_request(max_tokens=5, cloud_tokens=4))
        b = engine.submit(make_request(max_tokens=5, cloud_tokens=4))
        drive(engine)
        return await collect(a), await collect(b)

    events_a, events_b = asyncio.run(body())
    assert token_ids(events_a) == token_ids(events_b) == alone


def test_cancel_ends_the_request(engine):
    async def body() -> list:
        stream = engine.submit(make_request())
        engine.step()
        stream.cancel()
        engine.step()
        return await collect(stream)

    events = asyncio.run(body())
    assert events[-1].reason is EndReason.CANCELLED
    assert events[-1].usage.completion_tokens == 1
    assert engine.metrics.requests.labels(reason="cancelled")._value.get() == 1


def test_refine_sends_keep_set_before_first_token(engine):
    events = run_alone(engine, make_request(cloud_tokens=0, refine_ratio=0.5))
    assert [type(e) for e in events] == [KeepSet, FirstToken, End]
    assert [type(e) for e in run_alone(engine, make_request(cloud_tokens=0))] == [FirstToken, End]


def test_a_refining_prompt_is_chunked_between_rounds_and_keeps_the_whole_prompts_keep_set(
    loaded_model,
):
    text = " ".join(["The river floods the meadow by the old mill every spring."] * 8)
    refining = make_request(prompt=text, max_tokens=2, cloud_tokens=1, refine_ratio=0.5)
    whole = run_alone(Engine(loaded_model, EngineConfig(prefill_chunk_tokens=0)), refining)

    class Recording(ModelRunner):
        ranges: list = []

        def prefill(self, seq, start, end):
            self.ranges.append((seq.request_id, start, end))
            return super().prefill(seq, start, end)

    runner = Recording(loaded_model)
    engine = Engine(loaded_model, EngineConfig(prefill_chunk_tokens=32), runner=runner)

    async def body() -> list:
        other = engine.submit(make_request(request_id="other", max_tokens=40, cloud_tokens=39))
        engine.step()  # "other" is prefilled and decodes from now on
        stream = engine.submit(refining.model_copy(update={"request_id": "refining"}))
        drive(engine)
        await collect(other)
        return await collect(stream)

    chunked = asyncio.run(body())
    mine = [(a, b) for rid, a, b in runner.ranges if rid == "refining"]
    assert len(mine) > 1, f"the refining prompt went in one forward: {mine}"
    assert isinstance(chunked[0], KeepSet) and chunked[0].is_available
    assert chunked[0].kept_positions == whole[0].kept_positions  # others' rounds not recorded
    assert token_ids(chunked) == token_ids(whole)


def test_a_refining_prompt_takes_its_prefix_from_the_cache_and_keeps_the_same_keep_set(
    loaded_model,
):
    # The cached keys are scored as they are (already rotated); the last W positions, whose
    # queries are scored, are always prefilled. Same keep-set as an engine without a cache.
    text = " ".join(["The river floods the meadow by the old mill every spring."] * 8)
    longer = text + " The school has ninety pupils and three teachers."
    fresh = Engine(loaded_model, EngineConfig(prefix_cache_bytes=0))
    cached = Engine(loaded_model, EngineConfig(prefix_cache_bytes=64 << 20))
    for prompt in (text, text, longer):  # the first fills the cache, the next two hit it
        refining = make_request(prompt=prompt, max_tokens=2, cloud_tokens=1, refine_ratio=0.5)
        want, got = run_alone(fresh, refining), run_alone(cached, refining)
        assert isinstance(got[0], KeepSet) and got[0].is_available, got[0]
        assert got[0].kept_positions == want[0].kept_positions
        assert token_ids(got) == token_ids(want)
    num_prompt = len(loaded_model.encode(longer, raw=True))
    assert got[-1].usage.cached_tokens > 0  # the follow-up's shared prefix came from the cache
    assert got[-1].usage.cached_tokens <= num_prompt - REFINE_WINDOW


def test_model_error_ends_only_that_request(loaded_model):
    class FailsOnce(ModelRunner):
        failed = False

        def decode(self, seqs):
            if not self.failed:
                self.failed = True
                raise RuntimeError("boom")
            return super().decode(seqs)

    engine = Engine(loaded_model, runner=FailsOnce(loaded_model))
    events = run_alone(engine, make_request())
    assert events[-1].reason is EndReason.ERROR and "boom" in events[-1].message
    assert run_alone(engine, make_request(cloud_tokens=1))[-1].reason is EndReason.BUDGET


@pytest.mark.parametrize(
    ("fields", "config", "error", "text"),
    [
        ({"fingerprint": "not-this-model"}, {}, FingerprintMismatch, "does not match"),
        ({"prompt_ids": [1, 49152], "prompt": None}, {}, InvalidRequest, "outside the vocab"),
        ({}, {"max_prompt_tokens": 2}, PromptTooLong, "shorten the prompt"),
        ({"max_tokens": 10_000, "cloud_tokens": 9000}, {}, PromptTooLong, "lower max_tokens"),
    ],
)
def test_bad_requests_are_refused_before_model_work(loaded_model, fields, config, error, text):
    engine = Engine(loaded_model, EngineConfig(**config))

    async def body() -> None:
        with pytest.raises(error, match=text):
            engine.submit(make_request(**fields))

    asyncio.run(body())
    assert engine.num_active == 0


def test_overload_duplicate_id_and_shutdown_are_refused(loaded_model):
    engine = Engine(loaded_model, EngineConfig(max_concurrent_requests=1))

    async def body() -> list:
        stream = engine.submit(make_request(request_id="one"))
        with pytest.raises(InvalidRequest, match="already in use"):
            engine.submit(make_request(request_id="one"))
        with pytest.raises(Overloaded):
            engine.submit(make_request())
        with pytest.raises(UnknownRequest, match="no request with id"):
            engine.handoff("never-sent", at_index=0)
        engine.close()
        with pytest.raises(CloudUnavailable, match="shutting down"):
            engine.submit(make_request())
        drive(engine)
        return await collect(stream)

    events = asyncio.run(body())
    assert [type(e) for e in events] == [End]
    assert events[0].reason is EndReason.ERROR and "shutting down" in events[0].message


def test_requests_are_keyed_by_owner_and_id(engine):
    """The same id from two owners is two requests; another owner's handoff is an unknown id."""

    async def body() -> tuple[list, list]:
        a = engine.submit(make_request(request_id="same", max_tokens=4, cloud_tokens=3), "alice")
        b = engine.submit(make_request(request_id="same", max_tokens=4, cloud_tokens=3), "bob")
        assert isinstance(a, RequestStream) and engine.num_active == 2
        engine.step()  # alice's prefill
        with pytest.raises(UnknownRequest) as foreign:
            engine.handoff("same", at_index=1, owner="mallory")
        with pytest.raises(UnknownRequest) as unknown:
            engine.handoff("never-sent", at_index=1, owner="mallory")
        assert str(foreign.value) == str(unknown.value).replace("never-sent", "same")
        assert engine.handoff("same", at_index=1, owner="alice") == "stopping"
        drive(engine)
        with pytest.raises(UnknownRequest):  # not even "finished" leaks to another owner
            engine.handoff("same", at_index=1, owner="mallory")
        assert engine.handoff("same", at_index=1, owner="alice") == "finished"
        return await collect(a), await collect(b)

    events_a, events_b = asyncio.run(body())
    assert events_a[-1].reason is EndReason.HANDOFF
    assert events_b[-1].reason is EndReason.BUDGET and len(token_ids(events_b)) == 4


def test_the_engine_counts_each_refusal_once(loaded_model):
    engine = Engine(loaded_model, EngineConfig(max_concurrent_requests=1))
    assert isinstance(engine, CloudEngine) and engine.can_score_prompts

    def rejected(code: str) -> float:
        return engine.metrics.rejected.labels(reason=code)._value.get()

    async def body() -> None:
        engine.submit(make_request())
        for request in (make_request(), make_request(fingerprint="other")):
            with pytest.raises((Overloaded, FingerprintMismatch)):
                engine.submit(request)

    asyncio.run(body())
    assert rejected("overloaded") == 1 and rejected("fingerprint_mismatch") == 1
