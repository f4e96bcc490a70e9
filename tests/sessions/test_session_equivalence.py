"""A 4-turn conversation of real text gives, at every turn, exactly the device-only answer to
the turn's whole history decoded from scratch: in pd, device and cloud modes, over HTTP and gRPC.
"""

from __future__ import annotations

import pytest

from benchmarks.data.conversation import jonah_turns
from common.messages import SamplingParams

TURNS = jonah_turns((1, 3))  # chapter, follow-up, chapter, follow-up: past 1,000 tokens
MAX_TOKENS = 8
CASES = [("pd", "http"), ("pd", "grpc"), ("cloud", "http"), ("cloud", "grpc"), ("device", None)]


def run_conversation(chat, reference, mode: str, sampling=None) -> list:
    # pd: the cloud sends 3 tokens at most, so the device takes over in every turn it joins.
    options = {"cloud_tokens": 2} if mode == "pd" else {}
    results = []
    for message in TURNS:
        before = len(chat.token_ids)
        result = chat.generate(
            message, max_tokens=MAX_TOKENS, mode=mode, sampling=sampling, **options
        )
        turn = chat.turns[-1]
        prompt = chat.token_ids[: turn.prompt_tokens]
        assert turn.rerendered is None, turn.rerendered  # the bundled template is incremental
        assert prompt[:before] == chat.token_ids[:before], "the history is only ever extended"
        assert result.fallback is None
        assert result.token_ids == reference(prompt, MAX_TOKENS, sampling)
        assert chat.token_ids[turn.prompt_tokens :][: len(result.token_ids)] == result.token_ids
        results.append(result)
    assert chat.turns[-1].prompt_tokens > 1000
    return results


@pytest.mark.parametrize(("mode", "transport"), CASES)
def test_every_turn_matches_device_only_from_scratch(
    cloud_server, make_client, reference, mode, transport
):
    url = {"http": cloud_server.http_url, "grpc": cloud_server.grpc_url, None: None}[transport]
    client = make_client(url, device_slowdown=2.0 if mode == "pd" else 1.0)
    results = run_conversation(client.session(), reference, mode)
    cached = [r.cached_prompt_tokens for r in results]
    assert cached[0] == 0
    if mode == "cloud":
        assert all(r.handoff_index is None for r in results)
        assert set(cached) == {0}, "cloud-only turns leave the device's cache untouched"
        return
    # From turn 2 on the device holds the history up to the last answer's closing ids.
    assert all(c > 0 for c in cached[1:]), cached
    assert all(r.prompt_tokens - r.cached_prompt_tokens < 700 for r in results)
    if mode == "pd":
        assert all(r.handoff_index is not None for r in results), "the device finishes each"


def test_seeded_sampling_matches_from_scratch(cloud_server, make_client, reference):
    sampling = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=3)
    client = make_client(cloud_server.http_url, device_slowdown=2.0)
    chat = client.session()
    results = run_conversation(chat, reference, "pd", sampling)
    first_prompt = chat.token_ids[: chat.turns[0].prompt_tokens]
    assert results[0].token_ids != reference(first_prompt, MAX_TOKENS), "sampling is not greedy"
