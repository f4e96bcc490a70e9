"""The cloud reader's event handling in one answer: order checks, and tokens past the handoff."""

from __future__ import annotations

import pytest
from device_helpers import SHORT_PROMPT, pacing

from common.errors import PDError
from common.messages import End, EndReason, FirstToken, Token, Usage
from device_client.answer import Answer
from device_client.client import DeviceClient
from device_client.types import Mode


def _token(index: int) -> Token:
    return Token(index=index, token_id=100 + index, text="x")


def test_tokens_past_the_handoff_are_dropped_and_the_stream_reads_on(loaded_model):
    client = DeviceClient(None, model=loaded_model, settings=pacing())
    request, _, pacing_config = client.build_request(SHORT_PROMPT, mode="device", max_tokens=8)
    answer = Answer(loaded_model, request, Mode.PD, pacing_config, client.config, client._executor)
    first = FirstToken(token_id=100, text="x", prompt_tokens=3, queue_s=0.0, prefill_s=0.1)
    assert answer._on_event(first) is False
    assert answer._on_event(_token(1)) is False
    assert answer._hand_off() == [100, 101]
    # The cloud stops within a step or two: those tokens are dropped, not an ordering error.
    assert answer._on_event(_token(2)) is False
    assert answer._on_event(_token(3)) is False
    assert answer._received == [100, 101]
    usage = Usage(prompt_tokens=3, completion_tokens=4, queue_s=0.0, prefill_s=0.1, busy_s=0.3)
    assert answer._on_event(End(reason=EndReason.HANDOFF, usage=usage)) is True
    assert answer.cloud_end is not None and answer.cloud_end.usage.busy_s == 0.3
    client.close()


def test_a_gap_in_the_cloud_tokens_is_an_error(loaded_model):
    client = DeviceClient(None, model=loaded_model, settings=pacing())
    request, _, pacing_config = client.build_request(SHORT_PROMPT, mode="device", max_tokens=8)
    answer = Answer(loaded_model, request, Mode.PD, pacing_config, client.config, client._executor)
    answer._on_event(
        FirstToken(token_id=100, text="x", prompt_tokens=3, queue_s=0.0, prefill_s=0.1)
    )
    with pytest.raises(PDError, match="cloud sent token 2, expected 1"):
        answer._on_event(_token(2))
    client.close()
