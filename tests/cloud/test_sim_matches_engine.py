"""The simulated cloud takes the engine's scheduling decisions, step for step.

The engine runs with a model runner that only advances a fake clock by the profile's cost of each
step (no forward), and requests are submitted when the clock passes their arrival time; the
simulator gets the same arrivals, lengths and profile. Both must take the same steps, in the same
order, at the same times, and give each request its first and last token at the same time.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from benchmarks.planner.sim_cloud import SimStep, simulate_cloud
from cloud_server.config import EngineConfig
from cloud_server.engine import Engine
from cloud_server.model_runner import SeqOutput
from cloud_server.scheduler import StepKind
from common.clock import FakeClock
from common.messages import End, FirstToken, GenerateRequest
from common.profiles import BatchCost, CloudProfile, DecodeCost, PrefillCost

CLOUD = CloudProfile(PrefillCost(a=0.01, b=0.001), DecodeCost(d0=0.02), BatchCost(e0=0.02, e1=0.01))
# Request i: arrival s, prompt tokens, tokens it gets (first included), refines its prompt.
SCRIPT = [  # (arrival s, prompt tokens, tokens it gets (first included), refines, cached prefix)
    (0.00, 40, 12, False, 0),
    (0.03, 300, 6, False, 0),  # long: chunked while request 0 decodes
    (0.05, 20, 1, False, 0),  # first token only; prefilled right after 1's last chunk
    (0.07, 150, 8, True, 0),  # refinement: chunked like the others (150 > 128 tokens)
    (0.40, 90, 5, False, 60),  # waits for a slot (4 slots); most of its prompt is cached
    (0.41, 30, 9, False, 0),
    (0.42, 60, 3, False, 59),  # all but its last prompt token cached
    (1.25, 50, 3, False, 0),  # arrives during a run of rounds: its prefill follows that round
    (2.50, 25, 4, False, 0),  # an idle engine again
]
CONFIG = EngineConfig(max_concurrent_requests=4, max_queue=8, prefill_chunk_tokens=128)


class TimedRunner:
    """A runner with no model: each step takes the profile's time on the fake clock."""

    def __init__(self, clock: FakeClock, on_time) -> None:
        self.clock, self.on_time = clock, on_time
        self.steps: list[SimStep] = []

    def prefill(self, seq, start: int, end: int) -> SeqOutput:
        index = int(seq.request_id)
        self.steps.append(SimStep(self.clock.now(), StepKind.PREFILL, (index,), (start, end)))
        self._take(CLOUD.prefill.extend_time(end - start, start))
        return SeqOutput(seq, token_id=42 if end == seq.num_prompt_tokens else None)

    def decode(self, seqs) -> list[SeqOutput]:
        ids = tuple(int(s.request_id) for s in seqs)
        self.steps.append(SimStep(self.clock.now(), StepKind.DECODE, ids))
        self._take(CLOUD.batch.e0 + CLOUD.batch.e1 * len(seqs))
        return [SeqOutput(seq, token_id=42) for seq in seqs]

    def attach_prefix(self, seq) -> int:
        return SCRIPT[int(seq.request_id)][4]  # the scripted prefix-cache hit

    def release(self, seq) -> None:
        pass

    def _take(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.on_time()  # requests arriving during the step join before its results


def run_engine(loaded_model) -> tuple[list[SimStep], dict[int, float], dict[int, float]]:
    clock = FakeClock()
    pending = list(range(len(SCRIPT)))
    first, end = {}, {}

    async def body() -> None:
        async def consume(i: int, stream) -> None:
            async for event in stream:
                if isinstance(event, FirstToken):
                    first[i] = clock.now()
                elif isinstance(event, End):
                    end[i] = clock.now()

        tasks = []

        def arrive() -> None:
            while pending and SCRIPT[pending[0]][0] <= clock.now():
                i = pending.pop(0)
                _, num_prompt, num_tokens, refine, _ = SCRIPT[i]
                request = GenerateRequest(
                    request_id=str(i),
                    prompt_ids=[1] * num_prompt,
                    max_tokens=num_tokens,
                    cloud_tokens=num_tokens - 1,
                    refine_ratio=0.5 if refine else 0.0,
                )
                tasks.append(asyncio.create_task(consume(i, engine.submit(request))))

        runner.on_time = arrive
        while pending or engine.num_active:
            if not engine.num_active:
                clock.set(SCRIPT[pending[0]][0])
                arrive()
            engine.step()
            for _ in range(4):  # let the consumers read this step's events at this time
                await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    runner = TimedRunner(clock, lambda: None)
    engine = Engine(loaded_model, CONFIG, clock=clock, runner=runner)
    asyncio.run(body())
    return runner.steps, first, end


def test_the_simulator_takes_the_engines_steps(loaded_model):
    engine_steps, first, end = run_engine(loaded_model)
    trace: list[SimStep] = []
    arrivals, prompts, tokens, refines, cached = (np.array(c) for c in zip(*SCRIPT, strict=True))
    run = simulate_cloud(
        arrivals, prompts, tokens, CLOUD, CONFIG.max_concurrent_requests,
        CONFIG.prefill_chunk_tokens, scores_prompt=refines, num_cached=cached, trace=trace,
    )  # fmt: skip

    def plan(steps: list[SimStep]) -> list[tuple]:
        return [(s.kind, s.requests, s.prefill_range) for s in steps]

    assert plan(trace) == plan(engine_steps)
    assert [s.start_s for s in trace] == pytest.approx([s.start_s for s in engine_steps])
    assert run.first_token_at.tolist() == pytest.approx([first[i] for i in range(len(SCRIPT))])
    assert run.decode_end_at.tolist() == pytest.approx([end[i] for i in range(len(SCRIPT))])
    # The script exercises what the two used to disagree on.
    steps = plan(engine_steps)
    assert (StepKind.PREFILL, (1,), (88, 216)) in steps, "a whole chunk between decode rounds"
    assert (StepKind.PREFILL, (3,), (0, 128)) in steps, "a refinement prompt chunked too"
    assert (StepKind.PREFILL, (4,), (60, 90)) in steps, "only the part past the cached prefix"
    pairs = [
        a[1] + b[1]
        for a, b in zip(steps[:-1], steps[1:], strict=True)
        if a[0] == b[0] == StepKind.PREFILL
    ]
    assert (1, 2) in pairs, "two prefills within one budget, no decode round between them"
    (late,) = [s for s in engine_steps if s.requests == (7,) and s.kind is StepKind.PREFILL]
    assert late.start_s > SCRIPT[7][0], "a decode round is never cut short by an arrival"
