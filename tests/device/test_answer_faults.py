"""The device never trusts the cloud (issue 11, items 9-12), with a fake cloud and the real model.

Whatever a cloud sends, the answer is complete, equal to the device-only answer, no exception
reaches the app, nothing hangs, and the result says what happened.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from answer_fakes import ScriptedCloud, end, first, keep_set, token
from device_helpers import SHORT_PROMPT

from common.messages import EndReason
from device_client.answer import Answer
from device_client.local_runtime import LocalSession
from device_client.types import Mode

MAX_TOKENS = 8
FAKE_URL = "http://fake-cloud"


@pytest.fixture
def prompt_len(loaded_model) -> int:
    return len(loaded_model.encode(SHORT_PROMPT))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bad_id", [1_000_000, -1, 2**40])
def test_a_token_id_outside_the_vocabulary_is_a_fallback_not_a_hang(
    make_client, reference, prompt_len, bad_id
):
    want = reference(SHORT_PROMPT, MAX_TOKENS)
    cloud = ScriptedCloud([first(want[0], prompt_len), token(1, bad_id), end()])
    client = make_client(FAKE_URL, open_cloud=cloud)
    result = client.generate(SHORT_PROMPT, max_tokens=MAX_TOKENS, mode="pd", cloud_tokens=4)
    assert result.token_ids == want
    assert result.fallback is not None and f"token id {bad_id} is outside" in result.fallback
    assert result.sources[0] == "cloud" and result.first_token_source == "cloud"


def test_a_keep_set_not_asked_for_is_ignored(make_client, reference, prompt_len):
    want = reference(SHORT_PROMPT, MAX_TOKENS)
    events = [keep_set([0, 1, 2]), first(want[0], prompt_len), token(1, want[1]), end()]
    # Small chunks: the keep-set arrives while most of the prompt is still to prefill.
    client = make_client(FAKE_URL, open_cloud=ScriptedCloud(events), prefill_chunk_tokens=4)
    result = client.generate(
        SHORT_PROMPT, max_tokens=MAX_TOKENS, mode="pd", cloud_tokens=1, refine_ratio=0.0
    )
    assert result.kept_prompt_tokens == result.prompt_tokens
    assert result.token_ids == want
    assert result.fallback is None
    assert "did not ask" in result.keep_set_note


def test_a_keep_set_outside_the_prompt_is_refused(make_client, reference, prompt_len):
    want = reference(SHORT_PROMPT, MAX_TOKENS)
    events = [keep_set([1_000_000_000, -5]), first(want[0], prompt_len), end()]
    client = make_client(FAKE_URL, open_cloud=ScriptedCloud(events), prefill_chunk_tokens=4)
    result = client.generate(
        SHORT_PROMPT, max_tokens=MAX_TOKENS, mode="pd", cloud_tokens=1, refine_ratio=0.5
    )
    assert result.kept_prompt_tokens == result.prompt_tokens
    assert result.token_ids == want
    assert result.fallback is not None and "outside the prompt" in result.fallback
    assert "refused" in result.keep_set_note


@pytest.mark.timeout(120)
def test_a_silent_cloud_reads_as_the_device_being_faster(make_client, reference):
    client = make_client(FAKE_URL, open_cloud=ScriptedCloud(silent=True))
    result = client.generate(SHORT_PROMPT, max_tokens=MAX_TOKENS, mode="pd")
    assert result.token_ids == reference(SHORT_PROMPT, MAX_TOKENS)
    assert result.handoff_index == 0
    assert result.fallback is None, "nothing failed: the device was ready first"
    assert result.first_token_source == "device"
    assert "before the cloud's first token" in result.cloud_unused_reason


def test_a_cloud_error_after_a_handoff_at_zero_is_no_fallback(make_client, reference):
    cloud = ScriptedCloud(after_handoff=[end(EndReason.ERROR, "boom")])
    result = make_client(FAKE_URL, open_cloud=cloud).generate(
        SHORT_PROMPT, max_tokens=MAX_TOKENS, mode="pd"
    )
    assert cloud.handoffs == [0]
    assert result.handoff_index == 0
    assert result.fallback is None
    assert result.token_ids == reference(SHORT_PROMPT, MAX_TOKENS)


class _BrokenSession(LocalSession):
    def prefill_chunk(self) -> int:
        raise RuntimeError("the device ran out of memory")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [Mode.PD, Mode.CLOUD])
def test_a_failing_device_ends_the_answer_instead_of_hanging(
    make_client, prompt_len, loaded_model, mode
):
    client = make_client(FAKE_URL)
    request, _, pacing = client.build_request(
        SHORT_PROMPT, max_tokens=MAX_TOKENS, mode="pd", cloud_tokens=2
    )
    # Cloud-only: the cloud stops short, so the device must finish, and fails too.
    cloud = ScriptedCloud([first(5, prompt_len), token(1), token(2), end()])
    session = _BrokenSession(loaded_model, request.prompt_ids)
    with ThreadPoolExecutor(1) as executor:
        answer = Answer(
            loaded_model,
            request,
            mode,
            pacing,
            client.config,
            executor,
            session=session,
            open_cloud=cloud,
        )
        shown = list(client.stream_answer(answer))  # no exception reaches the app
    result = answer.result
    assert result is not None and len(shown) == 3
    assert result.token_ids == [5, 11, 12], "what the cloud sent is still shown"
    assert result.end_reason == "error"
    assert "out of memory" in result.device_error
