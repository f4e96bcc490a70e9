"""The scheduler alone: admission, queueing, step order, stops. No model, no threads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from benchmarks.planner.sim_cloud import SimJob
from cloud_server.config import EngineConfig
from cloud_server.scheduler import Scheduler, StepKind
from cloud_server.sequence import Mailbox, Sequence, SequenceStatus
from common.errors import Overloaded
from common.messages import GenerateRequest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make_seq(loop: asyncio.AbstractEventLoop, request_id: str) -> Sequence:
    request = GenerateRequest(
        request_id=request_id, prompt_ids=[1, 2, 3], max_tokens=4, cloud_tokens=3
    )
    return Sequence(
        request=request,
        prompt_ids=[1, 2, 3],
        max_new_tokens=4,
        mailbox=Mailbox(loop),
        detokenizer=None,  # not used by the scheduler
        arrival_s=0.0,
    )


def test_rejects_at_once_beyond_the_limit(loop):
    sched = Scheduler(EngineConfig(max_concurrent_requests=2, retry_after_s=3.0))
    sched.add(make_seq(loop, "a"), now=0.0)
    sched.add(make_seq(loop, "b"), now=0.0)
    with pytest.raises(Overloaded, match="2 request slots are busy") as info:
        sched.add(make_seq(loop, "c"), now=0.0)
    assert info.value.retry_after_s == 3.0
    assert sched.num_active == 2


def test_queued_request_gets_the_freed_slot(loop):
    sched = Scheduler(EngineConfig(max_concurrent_requests=1, max_queue=1))
    a, b = make_seq(loop, "a"), make_seq(loop, "b")
    sched.add(a, now=0.0)
    sched.add(b, now=1.0)
    assert b.status is SequenceStatus.QUEUED
    with pytest.raises(Overloaded):
        sched.add(make_seq(loop, "c"), now=1.0)
    assert sched.schedule(now=2.0).seqs == [a]
    sched.finish(a)
    step = sched.schedule(now=3.0)
    assert step.kind is StepKind.PREFILL and step.seqs == [b]
    assert b.admitted_s == 3.0


def test_prefill_comes_before_decode(loop):
    sched = Scheduler(EngineConfig(max_concurrent_requests=4))
    a, b = make_seq(loop, "a"), make_seq(loop, "b")
    sched.add(a, now=0.0)
    assert sched.schedule(now=0.0).kind is StepKind.PREFILL
    sched.add(b, now=0.0)
    step = sched.schedule(now=0.0)
    assert (step.kind, step.seqs) == (StepKind.PREFILL, [b])
    step = sched.schedule(now=0.0)
    assert (step.kind, step.seqs) == (StepKind.DECODE, [a, b])


def test_a_finished_request_leaves_before_the_next_step(loop):
    sched = Scheduler(EngineConfig(max_concurrent_requests=2))
    a, b = make_seq(loop, "a"), make_seq(loop, "b")
    for seq in (a, b):
        sched.add(seq, now=0.0)
        sched.schedule(now=0.0)
    sched.finish(a)  # the engine ends a request (handoff, EOS, error) in one place
    step = sched.schedule(now=1.0)
    assert step.seqs == [b]
    assert sched.find(("", "a")) is None and a.status is SequenceStatus.FINISHED
    with pytest.raises(AssertionError, match="exactly once"):
        sched.finish(a)


def make_long_seq(loop, request_id: str, num_prompt: int, refine_ratio: float = 0.0) -> Sequence:
    seq = make_seq(loop, request_id)
    seq.prompt_ids = list(range(num_prompt))
    seq.request = seq.request.model_copy(update={"refine_ratio": refine_ratio})
    return seq


@pytest.mark.parametrize("refine_ratio", [0.0, 0.5])  # a refining prompt is scored chunk by chunk
def test_long_prefill_is_chunked_between_decode_rounds(loop, refine_ratio):
    sched = Scheduler(EngineConfig(max_concurrent_requests=4, prefill_chunk_tokens=4))
    a, b = make_seq(loop, "a"), make_long_seq(loop, "b", 10, refine_ratio=refine_ratio)
    sched.add(a, now=0.0)
    assert sched.schedule(now=0.0).prefill_range == (0, 3)  # nobody decodes: whole prompt
    sched.add(b, now=0.0)
    # a decodes, so b's 10 tokens go in 4-token chunks with a decode round after each.
    plan = []
    for _ in range(7):
        step = sched.schedule(now=0.0)
        plan.append((step.kind, step.prefill_range if step.kind is StepKind.PREFILL else None))
    assert plan == [
        (StepKind.DECODE, None),  # a's prefill left 1 token of budget: no sliver chunk
        (StepKind.PREFILL, (0, 4)),
        (StepKind.DECODE, None),
        (StepKind.PREFILL, (4, 8)),
        (StepKind.DECODE, None),
        (StepKind.PREFILL, (8, 10)),
        (StepKind.DECODE, None),
    ]
    assert b.status is SequenceStatus.RUNNING and sched.running == [a, b]


def test_prompts_share_one_budget_between_decode_rounds():
    """Any job type works (here the simulator's); the chunk budget spans requests."""
    sched = Scheduler(EngineConfig(max_concurrent_requests=4, prefill_chunk_tokens=8))
    a, b, c, d = (SimJob(i, n, 4) for i, n in enumerate([2, 3, 4, 5]))
    sched.add(a, now=0.0)
    sched.schedule(now=0.0)  # a alone: whole prompt; a decodes from now on
    for job in (b, c, d):
        sched.add(job, now=0.0)
    plan = [sched.schedule(now=0.0) for _ in range(5)]
    assert [(s.kind, [j.index for j in s.seqs], s.prefill_range) for s in plan] == [
        (StepKind.PREFILL, [1], (0, 3)),  # 2 + 3 of 8
        (StepKind.DECODE, [0, 1], (0, 0)),  # c's 4 > the 3 left, a sliver: a round first
        (StepKind.PREFILL, [2], (0, 4)),
        (StepKind.PREFILL, [3], (0, 4)),  # 4 of d's 5 tokens: the budget is spent
        (StepKind.DECODE, [0, 1, 2], (0, 0)),
    ]
    assert sched.is_prefill_pending and d.num_prefilled == 4
