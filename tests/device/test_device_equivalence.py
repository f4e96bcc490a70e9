"""Correctness property 1: pd, device-only and cloud-only answers are the same tokens."""

from __future__ import annotations

import pytest
from device_helpers import LONG_PROMPT, SHORT_PROMPT
from support import assert_pd_matches_device_only

from common.messages import SamplingParams

MAX_TOKENS = 24


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("cloud_tokens", [0, 4, 200])
def test_pd_matches_device_only(cloud_server, make_client, reference, transport, cloud_tokens):
    """Greedy: the handoff loses and duplicates nothing, for budgets from 0 to past the answer."""
    url = cloud_server.grpc_url if transport == "grpc" else cloud_server.http_url
    # A device 3x slower than the cloud is still prefilling when cloud tokens arrive.
    client = make_client(url, device_slowdown=3.0, prefill_chunk_tokens=16)
    assert_pd_matches_device_only(client, reference, LONG_PROMPT, MAX_TOKENS, cloud_tokens)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_cloud_only_matches_device_only(cloud_server, make_client, reference, transport):
    url = cloud_server.grpc_url if transport == "grpc" else cloud_server.http_url
    result = make_client(url).generate(SHORT_PROMPT, max_tokens=MAX_TOKENS, mode="cloud")
    assert result.fallback is None
    assert result.token_ids == reference(SHORT_PROMPT, MAX_TOKENS)
    assert set(result.sources) == {"cloud"}


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_seeded_sampling_is_identical_across_the_handoff(
    cloud_server, make_client, reference, transport
):
    """Token i is drawn with a generator seeded from (seed, i) on both sides (the wire is exact:
    over gRPC too, 0.9 arrives as 0.9, not as the nearest float32)."""
    sampling = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=7)
    want = reference(LONG_PROMPT, MAX_TOKENS, sampling)
    assert want != reference(LONG_PROMPT, MAX_TOKENS), "sampling should differ from greedy"
    url = cloud_server.grpc_url if transport == "grpc" else cloud_server.http_url
    client = make_client(url, device_slowdown=3.0, prefill_chunk_tokens=16)
    pd = client.generate(
        LONG_PROMPT, max_tokens=MAX_TOKENS, mode="pd", cloud_tokens=6, sampling=sampling
    )
    cloud = client.generate(LONG_PROMPT, max_tokens=MAX_TOKENS, mode="cloud", sampling=sampling)
    assert pd.handoff_index and pd.handoff_index < MAX_TOKENS, "the test needs a real split"
    assert pd.token_ids == want
    assert cloud.token_ids == want


def test_other_seed_gives_another_answer(device_only):
    a = device_only.generate(
        SHORT_PROMPT, max_tokens=12, mode="device", sampling=SamplingParams(temperature=1.0, seed=1)
    )
    b = device_only.generate(
        SHORT_PROMPT, max_tokens=12, mode="device", sampling=SamplingParams(temperature=1.0, seed=2)
    )
    assert a.token_ids != b.token_ids


def test_refine_ratio_zero_reproduces_the_unrefined_answer(cloud_server, make_client, reference):
    client = make_client(cloud_server.http_url, device_slowdown=3.0, prefill_chunk_tokens=16)
    result = client.generate(
        LONG_PROMPT, max_tokens=MAX_TOKENS, mode="pd", cloud_tokens=6, refine_ratio=0.0
    )
    assert result.kept_prompt_tokens == result.prompt_tokens
    assert result.token_ids == reference(LONG_PROMPT, MAX_TOKENS)


def test_refined_prompt_is_shorter_on_the_device(cloud_server, make_client):
    """With ρ > 0 the device skips prompt tokens it had not prefilled when the keep-set came."""
    client = make_client(cloud_server.grpc_url, device_slowdown=3.0, prefill_chunk_tokens=16)
    result = client.generate(
        LONG_PROMPT, max_tokens=MAX_TOKENS, mode="pd", cloud_tokens=6, refine_ratio=0.5
    )
    assert result.fallback is None
    assert len(result.tokens) == MAX_TOKENS or result.end_reason == "eos"
    assert result.kept_prompt_tokens < result.prompt_tokens
    # Never fewer than the cloud's keep-set: half the prompt (plus its protected parts).
    assert result.kept_prompt_tokens >= result.prompt_tokens // 2
    assert "device" in result.sources, "the device finished from its refined cache"
