"""One scripted pd answer through the client and through the fleet simulator: the same display
times and the same handoff index, because both drive the same ``AnswerState``.

The client side is the real ``Answer`` (cloud reader, device worker, display loop) on a
virtual-time event loop, with a scripted cloud and a scripted device runtime; the simulator side
is ``simulate_display`` on the same device timeline. No model runs.
"""

from __future__ import annotations

import asyncio

import pytest
from virtual_time import ScriptedPrefill, ScriptedSession, VirtualTimeLoop, run_answer

from benchmarks.planner.sim_display import SimClock, simulate_display
from common.messages import End, EndReason, FirstToken, GenerateRequest, Token, Usage
from device_client.speed_controller import PacingConfig

PACING = PacingConfig(
    min_interval_s=0.05, max_interval_s=0.2, decode_interval_s=0.06, prefill_rate_tok_s=150.0
)
# 300 kept prompt tokens in five chunks, each slower than the last (deeper context).
CHUNKS = [(64, 0.311), (64, 0.333), (64, 0.357), (64, 0.379), (44, 0.273)]  # done at 1.653 s
ARRIVALS = [0.523 + 0.0471 * i for i in range(31)]  # first token + N = 30, the last at 1.936 s
TAU_D = 0.061


def _absorb_s(m: int) -> float:
    return 0.05 + 0.004 * m


class _Cloud:
    """The cloud's tokens reach the device at ``ARRIVALS`` (seconds since the request)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connect_s: float = 0.0) -> None:
        self._loop, self._connect_s = loop, connect_s
        self.handoffs: list[int] = []
        self.closed_at: float | None = None

    async def open(self, request, config) -> _Cloud:
        await asyncio.sleep(self._connect_s)
        return self

    async def events(self):
        for i, at in enumerate(ARRIVALS):
            await asyncio.sleep(at - self._loop.time())
            if i == 0:
                yield FirstToken(token_id=5, text="x", prompt_tokens=300, queue_s=0, prefill_s=0)
            else:
                yield Token(index=i, token_id=5, text="x")
        usage = Usage(prompt_tokens=300, completion_tokens=len(ARRIVALS))
        yield End(reason=EndReason.BUDGET, usage=usage)

    async def handoff(self, at_index: int) -> None:
        self.handoffs.append(at_index)

    async def aclose(self) -> None:
        self.closed_at = self._loop.time()


def _run_client(connect_s: float = 0.0, max_tokens: int = len(ARRIVALS) + 1):
    loop = VirtualTimeLoop()
    session = ScriptedSession(ScriptedPrefill(CHUNKS, loop.time), 300, _absorb_s, TAU_D)
    cloud = _Cloud(loop, connect_s)
    request = GenerateRequest(
        prompt_ids=[9] * 300, max_tokens=max_tokens, cloud_tokens=len(ARRIVALS) - 1
    )
    return run_answer(loop, session, request, PACING, cloud.open), cloud


def test_the_client_and_the_simulator_show_the_same_tokens_at_the_same_times():
    result, cloud = _run_client()
    times, sources, m = [t.time_s for t in result.tokens], result.sources, result.handoff_index
    clock = SimClock()
    sim = simulate_display(PACING, ARRIVALS, ScriptedPrefill(CHUNKS, clock.now), _absorb_s, clock)
    # The scenario hands off mid-stream, with cloud tokens still in flight (later ones dropped).
    assert m == sim.handoff_index == sum(at <= 1.653 for at in ARRIVALS) == 24
    assert cloud.handoffs == [m], "the client told the cloud to stop at m"
    assert sources[: m + 1] == ["cloud"] * m + ["device"]
    assert times[: m + 1] == pytest.approx(sim.shown_at, abs=1e-9)
    # The device's first own token comes after its prompt, the absorb and one τd.
    assert sim.own_shown_at >= 1.653 + _absorb_s(m)


def test_a_device_ready_before_the_cloud_connects_cancels_the_cloud_at_once():
    """Prompt done at 1.653 s, the cloud accepts at 2 s, the answer runs to 4.5 s: the stream
    is closed (the cloud's request cancelled) as it opens, and no handoff is sent."""
    result, cloud = _run_client(connect_s=2.0, max_tokens=48)
    assert result.handoff_index == 0 and set(result.sources) == {"device"}
    assert result.tokens[-1].time_s > 4.0, "the answer was still running"
    assert cloud.closed_at == pytest.approx(2.0)
    assert cloud.handoffs == []
    assert result.first_token_source == "device"
    assert "before the cloud's first token" in result.cloud_unused_reason


@pytest.mark.parametrize(
    ("ttft", "tau_c", "done", "n"),
    [
        (0.5, 0.05, 1.653, 30),
        (0.5, 0.05, 0.5 + 0.05 * 7, 30),
        (0.5, 0.1, 9.0, 12),
        (2.0, 0.1, 1.0, 8),
    ],
)
def test_the_simulated_handoff_index_is_the_timing_models(ttft, tau_c, done, n):
    """One definition of m: the simulator's (the answer state's count of tokens received when
    the prompt is done) is ``timing_model.handoff_index``, ties (a token arriving as the prompt
    ends) included, the budget's cap included."""
    from benchmarks.planner.sim_display import run_display
    from common.timing_model import handoff_index

    arrivals = [ttft + tau_c * i for i in range(1 + n)]
    sim = run_display(PACING, arrivals, 300, done, _absorb_s)
    assert sim.handoff_index == handoff_index(ttft, done, tau_c, 1 + n)
