"""SpeedController with a FakeClock: pacing bounds and the switch to the device's own tokens."""

from __future__ import annotations

import math

import pytest

from common.clock import FakeClock
from device_client.speed_controller import (
    Action,
    DeviceProgress,
    PacingConfig,
    SpeedController,
)

SAFETY = 1.1  # the controller leans pessimistic on the device's remaining work
PACING = PacingConfig(
    min_interval_s=0.05, max_interval_s=0.2, decode_interval_s=0.05, prefill_rate_tok_s=100.0
)


def _drain(ctrl, clock, num_tokens, progress_at) -> list[float]:
    """Show ``num_tokens`` buffered tokens, sleeping exactly as told; return the show times."""
    shown: list[float] = []
    while len(shown) < num_tokens:
        left = num_tokens - len(shown)
        decision = ctrl.decide(clock.now(), left, left, progress_at(clock.now()))
        if decision.action is Action.SHOW:
            ctrl.on_shown(clock.now())
            shown.append(clock.now())
        else:
            assert math.isfinite(decision.wait_s), "a buffered token must never wait forever"
            clock.advance(decision.wait_s)
    return shown


def test_no_gap_exceeds_max_interval_while_a_token_is_buffered():
    clock, ctrl = FakeClock(), SpeedController(PACING)
    far = DeviceProgress(prompt_total=10_000, prompt_done=0)  # own token ~100 s away
    shown = _drain(ctrl, clock, 12, lambda now: far)
    gaps = [b - a for a, b in zip(shown, shown[1:], strict=False)]
    assert shown[0] == 0.0  # the first token goes out at once
    assert max(gaps) == pytest.approx(PACING.max_interval_s)


def test_many_tokens_and_a_near_device_go_at_min_interval():
    clock, ctrl = FakeClock(), SpeedController(PACING)
    near = DeviceProgress(prompt_total=100, prompt_done=99)
    shown = _drain(ctrl, clock, 30, lambda now: near)
    gaps = [b - a for a, b in zip(shown, shown[1:], strict=False)]
    assert min(gaps) == pytest.approx(PACING.min_interval_s)


def test_tokens_are_stretched_until_the_device_token():
    clock, ctrl = FakeClock(), SpeedController(PACING)
    progress = DeviceProgress(prompt_total=100, prompt_done=0)  # T̂own = 1 s + τd
    ctrl.on_shown(clock.now())
    decision = ctrl.decide(0.0, 9, 9, progress)
    assert decision.action is Action.WAIT
    assert decision.wait_s == pytest.approx((SAFETY * 100 / 100.0 + 0.05) / 9)


def test_nothing_buffered_waits_for_input():
    ctrl = SpeedController(PACING)
    decision = ctrl.decide(0.0, 0, 5, DeviceProgress(prompt_total=10, prompt_done=0))
    assert (decision.action, decision.wait_s) == (Action.WAIT, math.inf)


def test_device_token_goes_out_at_the_first_release_instant_after_it_is_ready():
    clock, ctrl = FakeClock(), SpeedController(PACING)
    ctrl.on_shown(clock.now())  # last cloud token at t = 0
    decoding = DeviceProgress(prompt_total=10, prompt_done=10, is_decoding=True)
    clock.set(0.01)  # the device's own token is ready, Δmin not yet over
    decision = ctrl.decide(clock.now(), 1, 1, decoding)
    assert decision.action is Action.WAIT
    assert decision.wait_s == pytest.approx(PACING.min_interval_s - 0.01)
    clock.advance(decision.wait_s)
    assert ctrl.decide(clock.now(), 1, 1, decoding).action is Action.SHOW
    assert clock.now() == pytest.approx(PACING.min_interval_s)


def test_bad_pacing_bounds_are_rejected():
    with pytest.raises(ValueError, match="min_interval_s <= max_interval_s"):
        PacingConfig(min_interval_s=0.3, max_interval_s=0.2, decode_interval_s=0.05)


def test_the_latest_chunk_rate_drives_the_estimate():
    """Later prefill chunks are the slowest (deeper context): plan with the latest, not the mean."""
    ctrl = SpeedController(PACING)
    averaged = DeviceProgress(prompt_total=1000, prompt_done=500, started_at=0.0)
    latest = DeviceProgress(
        prompt_total=1000, prompt_done=500, started_at=0.0, recent_rate_tok_s=50.0
    )
    # 500 tokens in 2.5 s: 200 tok/s on average, but the last chunk ran at 50 tok/s.
    assert ctrl.estimate_own_token(2.5, averaged) == pytest.approx(2.5 + SAFETY * 500 / 200 + 0.05)
    assert ctrl.estimate_own_token(2.5, latest) == pytest.approx(2.5 + SAFETY * 500 / 50 + 0.05)


def test_a_pending_absorb_keeps_stretching_until_the_device_decodes():
    """Prompt done but m received tokens still to absorb: the device's token is not ready yet."""
    ctrl = SpeedController(PACING)
    ctrl.on_shown(0.0)
    absorbing = DeviceProgress(
        prompt_total=100, prompt_done=100, to_absorb=50, recent_rate_tok_s=50.0, updated_at=0.0
    )
    decoding = DeviceProgress(prompt_total=100, prompt_done=100, is_decoding=True)
    # 50 tokens at 50 tok/s + τd to absorb, + τd for the first own token: 1.1 s for 3 tokens.
    assert ctrl.interval(0.0, 3, absorbing) == pytest.approx(PACING.max_interval_s)
    assert ctrl.interval(0.0, 3, decoding) == pytest.approx(PACING.min_interval_s)


def test_the_estimate_does_not_drift_while_a_chunk_is_in_flight():
    """Remaining prefill counts from the last chunk's end, so it is steady between chunks."""
    ctrl = SpeedController(PACING)
    progress = DeviceProgress(
        prompt_total=1000, prompt_done=500, recent_rate_tok_s=100.0, updated_at=10.0
    )
    at_chunk_end = ctrl.estimate_own_token(10.0, progress)
    mid_chunk = ctrl.estimate_own_token(10.9, progress)
    assert at_chunk_end == pytest.approx(mid_chunk) == pytest.approx(10.0 + SAFETY * 5.0 + 0.05)


def test_online_cost_fit_recovers_growing_per_token_cost():
    from device_client.local_runtime import fit_token_cost

    alpha, beta = 0.010, 3e-6  # 10 ms/token, 3 us more per token already in the cache
    chunks = [(mid, alpha + beta * mid) for mid in (64, 192, 320, 448)]
    assert fit_token_cost(chunks) == pytest.approx((alpha, beta))
    # A first chunk slowed by warm-up does not flatten the slope.
    warm = [(64, 0.05), *chunks[1:]]
    assert fit_token_cost(warm) == pytest.approx((alpha, beta))
    assert fit_token_cost([(64, 0.01)]) == pytest.approx((0.01, 0.0))  # one chunk: flat
    assert fit_token_cost([]) is None


def test_the_estimate_integrates_the_growing_cost():
    """Later tokens cost more: 1000 tokens left from 1000 cost more than the first 1000 did."""
    ctrl = SpeedController(PACING)
    cost = (0.010, 3e-6)
    progress = DeviceProgress(prompt_total=2000, prompt_done=1000, updated_at=0.0, token_cost=cost)
    # ∫ 0.010 + 3e-6 x dx over [1000, 2000) = 10 s + 4.5 s, with the 10% safety; then τd.
    own = SAFETY * 14.5 + PACING.decode_interval_s
    assert ctrl.estimate_own_token(0.0, progress) == pytest.approx(own)
    absorbing = DeviceProgress(
        prompt_total=2000, prompt_done=2000, to_absorb=100, updated_at=0.0, token_cost=cost
    )
    absorb = 0.010 * 100 + 0.5 * 3e-6 * (2100**2 - 2000**2)
    expected = SAFETY * absorb + 2 * PACING.decode_interval_s
    assert ctrl.estimate_own_token(0.0, absorbing) == pytest.approx(expected)


def test_a_slowly_fed_display_counts_only_the_tokens_arriving_before_the_handoff():
    """Cloud tokens arriving after the device's prompt is done are dropped, so they cannot fill
    the wait: with the cloud slower than the display, the controller holds tokens back."""
    pacing = PacingConfig(
        min_interval_s=0.05, max_interval_s=1.0, decode_interval_s=0.05, prefill_rate_tok_s=100.0
    )
    ctrl = SpeedController(pacing)
    # 100 prompt tokens left at 100 tok/s: the prompt ends at 1.1 s, T̂own 1.15 s.
    progress = DeviceProgress(prompt_total=200, prompt_done=100, updated_at=0.0)
    own = SAFETY * 1.0 + 0.05
    assert ctrl.interval(0.0, 21, progress) == pytest.approx(own / 21)  # all 20 due count
    # A token every 0.5 s: 2 more arrive before the prompt ends, not 20.
    slow = ctrl.interval(0.0, 21, progress, num_buffered=1, arrival_interval_s=0.5)
    assert slow == pytest.approx(own / 3)
    fast = ctrl.interval(0.0, 21, progress, num_buffered=1, arrival_interval_s=0.01)
    assert fast == pytest.approx(own / 21)  # the cloud keeps up: nothing changes
