"""Issue 12, the first five minutes: without a settings file the client plans N and the pacing
from its own measured speed (``self_profile``), by the tuner's rule, so the first pd answer at
the phone emulation shows a smooth split.

No model runs and no wall clock is read: the device's forwards are scripted seconds (the ones
measured on this machine at slowdown 4, loaded), the answer runs on a virtual-time loop.
"""

from __future__ import annotations

import asyncio

import pytest
from virtual_time import ScriptedPrefill, ScriptedSession, VirtualTimeLoop, run_answer

from common.messages import End, EndReason, FirstToken, GenerateRequest, Token, Usage
from common.profiles import DecodeCost, DeviceProfile, fit_prefill
from common.settings import default_settings
from common.timing_model import PLAN_FACTOR, STALL_FACTOR, catch_up_time
from device_client.self_profile import UNCHECKED_ERROR, SelfProfile, untuned_plan
from device_client.speed_controller import PacingConfig

# `pdd generate "Why is the sky blue?"` at the phone emulation (slowdown 4) on the shared 2-core
# machine, measured: a 36-token prompt in one chunk of 3.5 s, the absorb of m tokens 0.1 + 0.083 m
# s, the device's own steps 0.6 s; the cloud's first token at 1.05 s, then one every 0.25 s.
PROMPT_LEN = 36
CHUNKS = [(PROMPT_LEN, 3.5)]
DECODE_S = 0.6
TTFT_S, CLOUD_TAU_S = 1.05, 0.25
# The warm-up the client runs at start-up on that device: 32 tokens, then two decode steps.
WARM_UP = [(32, 0, 3.1), (1, 32, DECODE_S), (1, 33, DECODE_S)]
# Before the fix: default_settings' fixed N = 64 and Δmax 250 ms, τ̂d and the prefill rate unknown.
OLD_DEFAULT = (64, PacingConfig(min_interval_s=0.0, max_interval_s=0.25, decode_interval_s=0.0))


def _absorb_s(m: int) -> float:
    return 0.1 + 0.083 * m


def _warmed_up() -> SelfProfile:
    me = SelfProfile()
    me.observe(WARM_UP, [f[2] for f in WARM_UP if f[0] == 1])
    return me


class _Cloud:
    """The first token at TTFT_S, then one every CLOUD_TAU_S, 1 + N in all."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cloud_tokens: int) -> None:
        self._loop, self._n = loop, cloud_tokens

    async def open(self, request, config) -> _Cloud:
        return self

    async def events(self):
        for i in range(1 + self._n):
            await asyncio.sleep(TTFT_S + CLOUD_TAU_S * i - self._loop.time())
            if i == 0:
                yield FirstToken(
                    token_id=5, text="x", prompt_tokens=PROMPT_LEN, queue_s=0, prefill_s=0
                )
            else:
                yield Token(index=i, token_id=5, text="x")
        yield End(reason=EndReason.BUDGET, usage=Usage(prompt_tokens=PROMPT_LEN))

    async def handoff(self, at_index: int) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _handoff_gaps(cloud_tokens: int, pacing: PacingConfig) -> tuple[int, list[float]]:
    """(m, the display gaps up to the device's first own token) of one answer."""
    loop = VirtualTimeLoop()
    session = ScriptedSession(ScriptedPrefill(CHUNKS, loop.time), PROMPT_LEN, _absorb_s, DECODE_S)
    request = GenerateRequest(prompt_ids=[9] * PROMPT_LEN, max_tokens=64, cloud_tokens=cloud_tokens)
    result = run_answer(loop, session, request, pacing, _Cloud(loop, cloud_tokens).open)
    m = result.handoff_index
    assert m and result.sources[: m + 1] == ["cloud"] * m + ["device"]
    times = [t.time_s for t in result.tokens[: m + 1]]
    return m, [b - a for a, b in zip(times, times[1:], strict=False)]


def test_the_first_answer_at_the_phone_emulation_does_not_stall_at_the_handoff():
    n, pacing = untuned_plan(_warmed_up().profile(), PROMPT_LEN, max_tokens=64)
    # Paced to the device's own rhythm, measured by the warm-up.
    assert pacing.min_interval_s == pacing.decode_interval_s == pytest.approx(DECODE_S)
    assert pacing.prefill_rate_tok_s is not None
    m, gaps = _handoff_gaps(n, pacing)
    assert max(gaps) <= STALL_FACTOR * pacing.max_interval_s
    assert gaps[-1] <= STALL_FACTOR * DECODE_S, "the handoff is no longer than the device's rhythm"
    # The same answer under the old fixed defaults ran the buffer dry: the display kept up with
    # the slow cloud at 250 ms with no estimate of the device, then waited out the whole absorb.
    old_n, old_pacing = OLD_DEFAULT
    _, old_gaps = _handoff_gaps(old_n, old_pacing)
    assert old_gaps[-1] > 2 * STALL_FACTOR * old_pacing.max_interval_s


def test_the_untuned_budget_covers_a_long_prompts_catch_up_at_the_phone_emulation():
    """At 2k tokens the old N = 64 shown at 250 ms ends ~13 s before the device's first token;
    the plan's N, shown Δplan apart from t = 0 (nothing assumed of the cloud), lasts past it."""
    # The README's phone-emulation device (slowdown 4): 5.7 / 12.2 / 29.1 s prefill, τd ~0.2 s.
    device = DeviceProfile(
        fit_prefill([512, 1024, 2048], [5.70, 12.18, 29.08]), DecodeCost(d0=0.2, d1=1e-5)
    )
    L, max_tokens = 2048, 256
    n, pacing = untuned_plan(device, L, max_tokens)
    tau_d = pacing.decode_interval_s
    assert pacing.max_interval_s == pytest.approx(1.5 * tau_d)
    own = catch_up_time(L, 0.0, n + 1, device)
    assert n * PLAN_FACTOR * tau_d >= own + tau_d, "the cloud stream lasts until the device's token"
    assert n < max_tokens - 1, "and the device still takes over"
    old_n = default_settings().buckets[0].cloud_tokens
    assert old_n * default_settings().buckets[0].max_interval_s < catch_up_time(L, 0.0, 65, device)


def test_the_profile_learns_from_answers_and_its_error_sets_the_safety():
    me = _warmed_up()
    first = me.profile()
    assert first is not None and first.prefill.max_rel_err == UNCHECKED_ERROR
    assert first.prefill.time(32) == pytest.approx(3.1, rel=1e-6)
    assert first.prefill.extend_time(1, 32) == pytest.approx(DECODE_S, rel=1e-6)
    # An answer whose prefill ran 20% slower than predicted (beside the cloud).
    slow = 1.2 * first.prefill.time(PROMPT_LEN)
    me.observe([(PROMPT_LEN, 0, slow), (1, PROMPT_LEN, 0.7)], [0.7])
    assert me.error == pytest.approx(0.2, rel=1e-3)
    assert me.decode_s == pytest.approx(0.5 * (DECODE_S + 0.7))
    later = me.profile()
    assert later.prefill.time(PROMPT_LEN) > first.prefill.time(PROMPT_LEN)
    assert later.prefill.max_rel_err == pytest.approx(0.2, rel=1e-3)
    assert later.prefill.c == 0, "no quadratic term from short prompts alone"
    assert later.prefill.time(PROMPT_LEN) < 2 * slow
    assert me.profile(prompt_len=2048).prefill.max_rel_err == UNCHECKED_ERROR
    assert SelfProfile().profile() is None, "nothing measured, nothing planned"
