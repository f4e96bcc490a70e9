"""The answer state's handoff, display and end rules, with a fake clock and no model."""

from __future__ import annotations

import math

import pytest
from answer_fakes import EOS, PACING, end, first, make_state, token

from common.messages import EndReason
from device_client.answer_state import StepKind
from device_client.types import Mode


def _show_all(state, clock) -> list[tuple[int, str, float]]:
    """Step the display, sleeping exactly as told, until it waits for input or ends."""
    shown = []
    while True:
        step = state.next_step()
        if step.kind is StepKind.SHOW:
            shown.append((step.token_id, step.source, clock.now()))
        elif step.kind is StepKind.WAIT and math.isfinite(step.wait_s):
            clock.advance(step.wait_s)
        else:
            return shown


def test_hand_off_at_received_then_the_device_token_follows_the_cloud_ones():
    state, device, clock = make_state(max_tokens=6, cloud_tokens=4)
    state.on_cloud_event(first(10))
    state.on_cloud_event(token(1, 11))
    device.prompt_done = device.prompt_total
    assert state.hand_off() == [10, 11]
    assert state.num_left == 2, "no cloud token is due after the handoff"
    assert state.progress().to_absorb == 2 and not state.progress().is_decoding
    state.on_absorbed(2)
    assert state.progress().is_decoding
    assert state.on_device_token(20) is True
    shown = _show_all(state, clock)
    assert [(t, s) for t, s, _ in shown] == [(10, "cloud"), (11, "cloud"), (20, "device")]
    assert shown[0][2] == 0.0, "the first token goes out at once"


def test_tokens_left_count_the_cloud_tokens_still_due():
    state, _, _ = make_state(max_tokens=8, cloud_tokens=4)
    state.on_cloud_event(first())
    assert state.num_left == 5  # 1 buffered + 4 due
    state.on_cloud_closed()
    assert state.num_left == 1, "a closed cloud sends nothing more"


def test_the_cloud_pace_is_measured_from_first_to_latest_token():
    state, _, clock = make_state()
    state.on_cloud_event(first())
    assert state.cloud_pace is None
    clock.advance(0.2)
    state.on_cloud_event(token(1))
    clock.advance(0.4)
    state.on_cloud_event(token(2))
    assert state.cloud_pace == pytest.approx(0.3)


def test_the_answer_ends_at_max_tokens_or_eos():
    full, _, clock = make_state(max_tokens=2, cloud_tokens=4)
    full.on_cloud_event(first())
    full.on_cloud_event(token(1))
    assert full.is_cloud_answer_done
    assert len(_show_all(full, clock)) == 2
    assert full.end_reason == "max_tokens"
    eos, _, clock = make_state()
    eos.on_cloud_event(first())
    eos.on_cloud_event(token(1, EOS))
    assert len(_show_all(eos, clock)) == 1, "the end-of-sequence token is not shown"
    assert eos.end_reason == "eos"


def test_device_tokens_stop_at_max_tokens_and_at_eos():
    state, _, _ = make_state(Mode.DEVICE, max_tokens=3)
    state.hand_off()
    assert [state.on_device_token(t) for t in (20, 21, 22)] == [True, True, False]
    eos, _, _ = make_state(Mode.DEVICE, max_tokens=3)
    eos.hand_off()
    assert eos.on_device_token(EOS) is False


def test_a_device_failure_before_the_handoff_still_shows_the_cloud_tokens_then_ends():
    """The device worker dying must never leave the display waiting (it used to hang)."""
    state, _, clock = make_state(max_tokens=8, cloud_tokens=2)
    state.on_cloud_event(first())
    state.on_device_failed("device runtime failed: RuntimeError('boom')")
    state.on_cloud_event(token(1))
    assert len(_show_all(state, clock)) == 2
    assert state.end_reason is None, "the cloud may still send"
    state.on_cloud_event(token(2))
    state.on_cloud_event(end(EndReason.BUDGET))
    state.on_cloud_closed()
    assert len(_show_all(state, clock)) == 1
    assert state.end_reason == "error"
    assert "boom" in state.device_error


def test_a_device_failure_after_the_handoff_ends_once_the_queue_is_shown():
    state, _, clock = make_state()
    state.on_cloud_event(first())
    state.hand_off()
    state.on_device_failed("device runtime failed: MemoryError()")
    assert len(_show_all(state, clock)) == 1
    assert state.end_reason == "error"


def test_nothing_buffered_waits_for_input_not_for_ever_a_timer():
    state, _, _ = make_state()
    step = state.next_step()
    assert step.kind is StepKind.WAIT and math.isinf(step.wait_s)


def test_cloud_only_shows_on_arrival():
    state, _, clock = make_state(Mode.CLOUD, max_tokens=4, cloud_tokens=3)
    assert state.progress().is_decoding, "nothing to wait for"
    state.on_cloud_event(first())
    state.next_step()
    state.on_cloud_event(token(1))
    step = state.next_step()
    assert step.kind is StepKind.WAIT
    assert step.wait_s == pytest.approx(PACING.min_interval_s)
