"""The answer state's handling of cloud events, without a model: the cloud is not trusted.

Every bad event is a cloud failure (the device finishes, ``fallback`` says why); tokens past the
handoff are dropped; keep-sets are applied only when asked for and sound.
"""

from __future__ import annotations

import pytest
from answer_fakes import EOS, end, first, keep_set, make_state, token

from common.messages import EndReason
from device_client.answer_state import StepKind
from device_client.types import Mode


def test_tokens_past_the_handoff_are_dropped_and_the_stream_reads_on():
    state, _, _ = make_state()
    assert state.on_cloud_event(first(50)) is False
    assert state.on_cloud_event(token(1, 51)) is False
    assert state.hand_off() == [50, 51]
    # The cloud stops within a step or two: those tokens are dropped, not an ordering error.
    assert state.on_cloud_event(token(2)) is False
    assert state.on_cloud_event(token(3)) is False
    assert state.received == [50, 51]
    assert state.on_cloud_event(end(EndReason.HANDOFF, completion=4)) is True
    assert state.cloud_end is not None and state.cloud_end.usage.completion_tokens == 4
    assert state.fallback is None


def test_a_gap_in_the_cloud_tokens_is_a_cloud_failure():
    state, _, _ = make_state()
    state.on_cloud_event(first())
    assert state.on_cloud_event(token(2)) is True, "the stream is over"
    assert state.fallback == "bad cloud event: cloud sent token 2, expected 1"
    assert state.received == [10]


@pytest.mark.parametrize("bad_id", [100, 1_000_000, -1, 2**40])
def test_a_token_id_outside_the_vocabulary_is_a_cloud_failure(bad_id):
    """Issue 11 item 9: such an id killed the device worker (a hang) or raised in the app."""
    state, _, _ = make_state()
    state.on_cloud_event(first())
    assert state.on_cloud_event(token(1, bad_id)) is True
    assert state.fallback is not None and f"token id {bad_id} is outside" in state.fallback
    assert state.received == [10], "the bad id never reaches the display or the device"


def test_a_first_token_for_another_prompt_length_is_a_cloud_failure():
    state, _, _ = make_state(prompt_len=10)
    assert state.on_cloud_event(first(prompt_tokens=11)) is True
    assert "counted 11 prompt tokens, the device sent 10" in state.fallback
    assert state.received == []


def test_a_token_past_the_budget_is_a_cloud_failure():
    state, _, _ = make_state(cloud_tokens=1)
    state.on_cloud_event(first())
    state.on_cloud_event(token(1))
    assert state.on_cloud_event(token(2)) is True
    assert "past its budget of 1 + 1" in state.fallback


def test_an_eos_end_without_an_eos_token_is_a_cloud_failure():
    state, _, _ = make_state()
    state.on_cloud_event(first())
    assert state.on_cloud_event(end(EndReason.EOS)) is True
    assert "ended with eos but sent no end-of-sequence token" in state.fallback
    assert not state.is_cloud_answer_done, "the device must finish the answer"


def test_an_eos_token_ends_the_answer_from_the_cloud():
    state, _, _ = make_state()
    state.on_cloud_event(first())
    state.on_cloud_event(token(1, EOS))
    assert state.on_cloud_event(end(EndReason.EOS)) is True
    assert state.fallback is None and state.is_cloud_answer_done


def test_a_keep_set_not_asked_for_is_ignored_and_said_so():
    """Issue 11 item 10: with refine_ratio 0 a keep-set was applied anyway."""
    state, device, _ = make_state(refine_ratio=0.0)
    assert state.on_cloud_event(keep_set([0, 1])) is False
    assert device.kept == []
    assert state.keep_set_note is not None and "did not ask" in state.keep_set_note
    assert state.fallback is None


@pytest.mark.parametrize(
    ("positions", "problem"),
    [
        ([1_000_000_000, -5], "outside the prompt"),
        ([0, 1, 2, 3, 4, 10], "outside the prompt"),
        ([3, 2, 1, 0, 4, 5], "not sorted and unique"),
        ([0, 1, 1, 2, 3, 4], "not sorted and unique"),
        ([0, 1, 2, 3], "keeps 4 of 10 prompt tokens; refine_ratio 0.5 allows no fewer than 5"),
    ],
)
def test_a_malformed_keep_set_is_refused_as_a_cloud_failure(positions, problem):
    state, device, _ = make_state(refine_ratio=0.5)
    assert state.on_cloud_event(keep_set(positions)) is True
    assert device.kept == [], "nothing is applied"
    assert problem in state.fallback and problem in state.keep_set_note


def test_a_sound_keep_set_is_applied():
    state, device, _ = make_state(refine_ratio=0.5)
    assert state.on_cloud_event(keep_set([0, 2, 4, 6, 8])) is False
    assert device.kept == [[0, 2, 4, 6, 8]]
    assert state.fallback is None and state.keep_set_note is None


def test_a_keep_set_out_of_order_is_a_cloud_failure():
    late, _, _ = make_state(refine_ratio=0.5)
    late.on_cloud_event(first())
    assert late.on_cloud_event(keep_set(list(range(10)))) is True
    assert "after the first token" in late.fallback
    twice, _, _ = make_state(refine_ratio=0.5)
    twice.on_cloud_event(keep_set(list(range(10))))
    assert twice.on_cloud_event(keep_set(list(range(10)))) is True
    assert "a second keep-set" in twice.fallback


def test_a_cloud_error_after_a_handoff_at_zero_is_no_fallback():
    """Issue 11 item 12: ``if handoff_index and ...`` read a handoff at 0 as none."""
    state, _, _ = make_state()
    state.on_cloud_connected()
    assert state.hand_off() == []
    assert state.on_cloud_event(end(EndReason.ERROR, "boom")) is True
    assert state.fallback is None
    assert state.cloud_unused_reason == (
        "the device finished its prompt before the cloud's first token"
    )


def test_a_cloud_unreachable_after_a_handoff_at_zero_is_a_fallback():
    """Never connected: the cloud failed, even if the device was ready first."""
    state, _, _ = make_state()
    state.hand_off()
    state.on_cloud_failed("cloud_unavailable: no route")
    assert state.fallback == "cloud_unavailable: no route"
    assert state.cloud_unused_reason == state.fallback


def test_a_cloud_only_stream_that_stops_short_is_a_fallback():
    """Cloud-only starts the device only on a failure: a short stream must be one, or hang."""
    state, _, _ = make_state(Mode.CLOUD, max_tokens=8, cloud_tokens=7)
    state.on_cloud_event(first())
    assert not state.is_device_needed
    state.on_cloud_event(end(EndReason.BUDGET))
    state.on_cloud_closed()
    assert state.fallback == "the cloud stopped after 1 of 8 tokens (budget)"
    assert state.is_device_needed


def test_first_token_source_and_why_the_cloud_gave_nothing():
    """Issue 11 item 11: "the cloud failed" and "the device was faster" read differently."""
    cloud_first, _, _ = make_state()
    cloud_first.on_cloud_event(first())
    assert cloud_first.next_step().kind is StepKind.SHOW
    assert cloud_first.first_token_source == "cloud"
    assert cloud_first.cloud_unused_reason is None
    failed, _, _ = make_state()
    failed.on_cloud_failed("the cloud was silent for more than 60 s")
    assert failed.cloud_unused_reason == failed.fallback
    device_only, _, _ = make_state(Mode.DEVICE)
    assert "device-only" in device_only.cloud_unused_reason


def test_the_cloud_s_own_keep_set_size_is_always_accepted_and_one_less_refused():
    """The device's floor must match the cloud's L - floor(ρL) exactly, float error included
    (ceil((1 - ρ)L) is one more at L = 10, ρ = 0.7, and refused honest keep-sets)."""
    from cloud_server.refine import num_kept

    for num_prompt in range(1, 200):
        for ratio in (0.1, 0.25, 0.3, 0.5, 0.7, 0.9):
            kept = num_kept(num_prompt, ratio)
            honest, _, _ = make_state(prompt_len=num_prompt, refine_ratio=ratio)
            assert honest.on_cloud_event(keep_set(list(range(kept)))) is False
            if kept > 1:
                short, _, _ = make_state(prompt_len=num_prompt, refine_ratio=ratio)
                assert short.on_cloud_event(keep_set(list(range(kept - 1)))) is True
