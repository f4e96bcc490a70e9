"""Wire messages, their protobuf twins, settings and the reproducible sampler."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from common.errors import InvalidRequest
from common.messages import (
    End,
    EndReason,
    FirstToken,
    GenerateRequest,
    KeepSet,
    SamplingParams,
    Token,
    Usage,
)
from common.proto import pd_pb2 as pb
from common.sampling import sample_token
from common.settings import Bucket, SplitSettings
from common.wire import event_from_proto, event_to_proto, request_from_proto, request_to_proto


def test_request_needs_exactly_one_prompt():
    with pytest.raises(ValidationError, match="exactly one of prompt_ids, prompt, messages"):
        GenerateRequest(max_tokens=4, cloud_tokens=1)
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest(prompt="a", prompt_ids=[1], max_tokens=4, cloud_tokens=1)


@pytest.mark.parametrize("ratio", [-0.1, 0.95, math.nan])
def test_refine_ratio_out_of_range_is_rejected(ratio):
    with pytest.raises(ValidationError, match="refine_ratio"):
        GenerateRequest(prompt_ids=[1], max_tokens=4, cloud_tokens=1, refine_ratio=ratio)


def test_request_round_trips_through_protobuf():
    req = GenerateRequest(
        prompt_ids=[5, 6, 7],
        max_tokens=9,
        cloud_tokens=3,
        refine_ratio=0.3,
        sampling=SamplingParams(temperature=0.7, top_p=0.9, top_k=20, seed=11),
        fingerprint="abc",
    )
    back = request_from_proto(request_to_proto(req).request)
    # Floats travel as doubles: exactly what the device samples with, not the nearest float32.
    assert back.sampling.temperature == 0.7 and back.sampling.top_p == 0.9
    assert back.refine_ratio == 0.3
    assert back == req


def test_bad_protobuf_fields_become_invalid_request():
    msg = pb.GenerateRequest(max_tokens=0, cloud_tokens=1, prompt="hi")
    with pytest.raises(InvalidRequest, match="max_tokens"):
        request_from_proto(msg)


@pytest.mark.parametrize(
    "event",
    [
        KeepSet(is_available=True, kept_positions=[0, 3, 4], reason="ok"),
        FirstToken(token_id=3, text="a", prompt_tokens=9, queue_s=0.1, prefill_s=0.2),
        Token(index=4, token_id=8, text=" b"),
        End(
            reason=EndReason.HANDOFF, usage=Usage(prompt_tokens=9, completion_tokens=5, busy_s=1.5)
        ),
    ],
)
def test_events_round_trip_through_protobuf(event):
    assert event_from_proto(event_to_proto(event)) == event


def test_settings_pick_the_first_covering_bucket():
    def bucket(n: int, cloud: int) -> Bucket:
        return Bucket(max_prompt_len=n, cloud_tokens=cloud, min_interval_s=0, max_interval_s=1)

    settings = SplitSettings(buckets=[bucket(128, 4), bucket(1024, 32)])
    assert settings.bucket_for(100).cloud_tokens == 4
    assert settings.bucket_for(129).cloud_tokens == 32
    assert settings.bucket_for(5000).cloud_tokens == 32  # longer prompts use the last bucket
    with pytest.raises(ValidationError, match="increasing"):
        SplitSettings(buckets=[bucket(1024, 1), bucket(128, 1)])
    with pytest.raises(ValidationError, match="cloud, the device, or both"):
        Bucket(
            max_prompt_len=1,
            cloud_tokens=1,
            min_interval_s=0,
            max_interval_s=1,
            use_cloud=False,
            use_device=False,
        )


def test_greedy_is_argmax_and_sampling_is_seeded_per_index():
    logits = torch.tensor([0.1, 2.0, 1.9, -1.0])
    assert sample_token(logits, SamplingParams(), 0) == 1
    hot = SamplingParams(temperature=1.5, seed=3)
    draws = [sample_token(logits, hot, i) for i in range(40)]
    assert draws == [sample_token(logits, hot, i) for i in range(40)], "same (seed, index)"
    assert len(set(draws)) > 1, "different indices draw differently"
    assert sample_token(logits, SamplingParams(temperature=1.0, top_k=1, seed=9), 5) == 1
