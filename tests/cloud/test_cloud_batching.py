"""Batched decode on the real model: concurrent requests give exactly the tokens each gives alone."""

from __future__ import annotations

import asyncio

import pytest

from cloud_server.config import EngineConfig
from cloud_server.engine import Engine
from common.messages import EndReason, FirstToken, GenerateRequest, SamplingParams, Token
from common.sampling import sample_token

PROMPTS = [
    "Once upon a time",
    "The capital of France is a city where",
    "In 1969, the first people to walk on",
    "Water boils at",
]


def make_request(prompt: str, **fields) -> GenerateRequest:
    defaults = {"prompt": prompt, "raw": True, "max_tokens": 12, "cloud_tokens": 11}
    return GenerateRequest(**(defaults | fields))


def token_ids(events: list) -> list[int]:
    return [e.token_id for e in events if isinstance(e, FirstToken | Token)]


async def collect(stream) -> list:
    return [event async for event in stream]


def drive(engine: Engine) -> None:
    while engine.num_active:
        engine.step()


def run_alone(engine: Engine, request: GenerateRequest) -> list[int]:
    async def body() -> list[int]:
        stream = engine.submit(request)
        drive(engine)
        return token_ids(await collect(stream))

    return asyncio.run(body())


@pytest.fixture
def engine(loaded_model) -> Engine:
    return Engine(loaded_model, EngineConfig(max_concurrent_requests=4))


def requests() -> list[GenerateRequest]:
    seeded = SamplingParams(temperature=0.8, top_p=0.9, seed=7)
    return [
        make_request(PROMPTS[0]),
        make_request(PROMPTS[1]),
        make_request(PROMPTS[2], max_tokens=6, cloud_tokens=5),  # leaves early
        make_request(PROMPTS[3], sampling=seeded),  # seeded sampling, per row
    ]


def test_concurrent_requests_match_each_alone_with_staggered_joins(engine):
    alone = [run_alone(engine, r) for r in requests()]

    async def body() -> list[list[int]]:
        reqs = requests()
        streams = [engine.submit(reqs[0]), engine.submit(reqs[1])]
        for _ in range(5):  # two prefills, then decode rounds before the others join
            engine.step()
        streams += [engine.submit(reqs[2]), engine.submit(reqs[3])]
        drive(engine)
        return [token_ids(await collect(s)) for s in streams]

    together = asyncio.run(body())
    assert together == alone
    assert engine.runner.batch.num_rows == 0, "every row left the batch"


def test_handoff_removes_one_row_without_disturbing_the_others(engine):
    alone = [run_alone(engine, make_request(p)) for p in PROMPTS[:3]]

    async def body() -> list[list]:
        streams = [engine.submit(make_request(p)) for p in PROMPTS[:3]]
        for _ in range(6):  # three prefills, three batched decode rounds
            engine.step()
        assert engine.runner.batch.num_rows == 3
        engine.handoff(streams[1].request_id, at_index=4)
        drive(engine)
        return [await collect(s) for s in streams]

    events = asyncio.run(body())
    assert token_ids(events[0]) == alone[0]
    assert token_ids(events[2]) == alone[2]
    handed = token_ids(events[1])
    assert events[1][-1].reason is EndReason.HANDOFF
    assert 1 < len(handed) < len(alone[1]) and handed == alone[1][: len(handed)]


def test_batch_length_shrinks_after_long_row_leaves(engine):
    async def body() -> tuple[int, int]:
        long_prompt = " ".join(["word"] * 40)
        engine.submit(make_request(long_prompt, max_tokens=3, cloud_tokens=2))
        engine.submit(make_request(PROMPTS[3], max_tokens=8, cloud_tokens=7))
        for _ in range(3):  # two prefills, one decode round: both rows, padded to the long one
            engine.step()
        before = engine.runner.batch.length
        for _ in range(2):  # the long request ends; the next round has one short row
            engine.step()
        return before, engine.runner.batch.length

    before, after = asyncio.run(body())
    assert after < before - 30, "leading padding columns were trimmed"


def test_chunked_prefill_lets_others_decode_and_changes_no_token(loaded_model):
    """A long prompt arriving while another request decodes is prefilled in chunks with decode
    rounds between them, and both answers are the tokens each gives alone."""
    long_prompt = "The history of the printing press begins " + " ".join(["again"] * 40)
    short, long = make_request(PROMPTS[0]), make_request(long_prompt, max_tokens=6, cloud_tokens=5)
    config = EngineConfig(max_concurrent_requests=4, prefill_chunk_tokens=16, prefix_cache_bytes=0)
    engine = Engine(loaded_model, config)  # no prefix cache: the second run prefills again
    alone = [run_alone(engine, r) for r in (short, long)]
    steps: list[str] = []
    runner = engine.runner
    prefill, decode = runner.prefill, runner.decode
    runner.prefill = lambda seq, a, b: (steps.append(f"P{b - a}"), prefill(seq, a, b))[1]
    runner.decode = lambda seqs: (steps.append(f"D{len(seqs)}"), decode(seqs))[1]

    async def body() -> list[list[int]]:
        streams = [engine.submit(make_request(PROMPTS[0]))]
        engine.step()  # the short prompt's prefill: it decodes from now on
        streams.append(engine.submit(make_request(long_prompt, max_tokens=6, cloud_tokens=5)))
        drive(engine)
        return [token_ids(await collect(s)) for s in streams]

    assert asyncio.run(body()) == alone
    num_long = len(loaded_model.encode(long_prompt, raw=True))
    chunks = [int(s[1:]) for s in steps[1:] if s.startswith("P")]
    assert sum(chunks) == num_long and len(chunks) >= 3 and max(chunks) <= 16
    # Every chunk but the last is followed by a decode round of the short request alone.
    after = [steps[i + 1] for i, s in enumerate(steps[:-1]) if i > 0 and s.startswith("P")]
    assert after[:-1] == ["D1"] * (len(chunks) - 1) and after[-1] == "D2"


def run_together(engine: Engine, reqs: list[GenerateRequest]) -> list[list]:
    async def body() -> list[list]:
        streams = [engine.submit(r) for r in reqs]
        drive(engine)
        return [await collect(s) for s in streams]

    return asyncio.run(body())


def test_extreme_sampling_values_decode_beside_greedy_rows(engine):
    """Issue 11: temperature 8.5e-38 or top_p 1e-300 once failed the whole batch in float32."""
    extreme = [
        SamplingParams(temperature=8.5e-38, seed=1),
        SamplingParams(temperature=0.7, top_p=1e-300, seed=2),
    ]
    greedy = [make_request(p, max_tokens=6, cloud_tokens=5) for p in PROMPTS]
    alone = [run_alone(engine, r) for r in greedy]
    mixed = greedy[:2] + [
        r.model_copy(update={"sampling": s}) for r, s in zip(greedy[2:], extreme, strict=True)
    ]
    events = run_together(engine, mixed)
    assert [e[-1].reason for e in events] == [EndReason.BUDGET] * 4
    assert [token_ids(e) for e in events] == alone  # the extreme rows draw the best token too


def test_a_row_whose_sampling_fails_ends_alone(engine, monkeypatch):
    def sample_or_fail(logits, params, index):
        if params.seed == 13 and index == 3:
            raise RuntimeError("sampling blew up")
        return sample_token(logits, params, index)

    greedy = [make_request(p, max_tokens=6, cloud_tokens=5) for p in PROMPTS[:3]]
    alone = [run_alone(engine, r) for r in greedy]
    doomed = make_request(PROMPTS[3], sampling=SamplingParams(temperature=0.5, seed=13))
    monkeypatch.setattr("cloud_server.model_runner.sample_token", sample_or_fail)
    events = run_together(engine, [*greedy, doomed])
    assert [token_ids(e) for e in events[:3]] == alone
    assert [e[-1].reason for e in events[:3]] == [EndReason.BUDGET] * 3
    end = events[3][-1]
    assert end.reason is EndReason.ERROR and "sampling blew up" in end.message
    assert end.usage.completion_tokens == 3 and engine.runner.batch.num_rows == 0
