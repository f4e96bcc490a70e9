"""PdSampler, vLLM's side of our seeded sampler, on hand-made batches (no engine needed)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vllm is not installed (pip install -e '.[vllm]')")

from vllm import SamplingParams as VllmSamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from cloud_server.vllm_sampler import PdSampler, extra_args_for  # noqa: E402
from common.messages import SamplingParams  # noqa: E402
from common.sampling import sample_token  # noqa: E402

VOCAB = 1000
SEEDED = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, seed=7)


def added(index: int, params: SamplingParams, output_ids: list[int]):
    vllm_params = VllmSamplingParams(temperature=0.0, extra_args=extra_args_for(params))
    return (index, vllm_params, [1, 2, 3], output_ids)


def update(batch_size: int, added=(), removed=(), moved=()) -> BatchUpdate:
    return BatchUpdate(batch_size=batch_size, removed=removed, added=added, moved=moved)


def test_greedy_rows_carry_nothing_and_are_left_alone():
    assert extra_args_for(SamplingParams()) is None
    sampler = PdSampler(None, torch.device("cpu"), False)
    sampler.update_state(update(1, added=[added(0, SamplingParams(), [])]))
    logits = torch.randn(1, VOCAB)
    assert torch.equal(sampler.apply(logits.clone()), logits)


def test_a_seeded_row_keeps_only_our_token_at_its_answer_index():
    """The row's argmax is then exactly ``sample_token(logits, params, index)``."""
    outputs: list[int] = [5, 6, 7]  # vLLM's live list: the next token is answer index 3
    sampler = PdSampler(None, torch.device("cpu"), False)
    sampler.update_state(
        update(2, added=[added(0, SamplingParams(), []), added(1, SEEDED, outputs)])
    )
    logits = torch.randn(2, VOCAB)
    out = sampler.apply(logits.clone())
    want = sample_token(logits[1], SEEDED, 3)
    assert int(out[1].argmax()) == want
    assert torch.isinf(out[1]).sum() == VOCAB - 1
    assert torch.equal(out[0], logits[0])
    outputs.append(want)  # vLLM appends; the next step draws index 4 from its own generator
    assert int(sampler.apply(logits.clone())[1].argmax()) == sample_token(logits[1], SEEDED, 4)


def test_rows_follow_moves_and_removals():
    sampler = PdSampler(None, torch.device("cpu"), False)
    sampler.update_state(update(2, added=[added(1, SEEDED, [])]))
    sampler.update_state(update(2, moved=[(1, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    logits = torch.randn(2, VOCAB)
    out = sampler.apply(logits.clone())
    assert int(out[0].argmax()) == sample_token(logits[0], SEEDED, 0)
    assert torch.equal(out[1], logits[1])
    sampler.update_state(update(1, removed=[0]))
    assert torch.equal(sampler.apply(logits.clone()), logits)


def test_a_malformed_argument_is_refused():
    bad = VllmSamplingParams(extra_args={"pd_sampling": {"temperature": -1}})
    with pytest.raises(ValueError):
        PdSampler.validate_params(bad)


def test_the_vllm_engine_implements_the_engine_seam():
    from cloud_server.config import ServerConfig
    from cloud_server.engine_api import CloudEngine
    from cloud_server.vllm_engine import VllmEngine
    from cloud_server.vllm_model import load_served_model

    engine = VllmEngine(load_served_model("smollm2-135m", "vllm-cpu"), ServerConfig())
    assert isinstance(engine, CloudEngine)
    assert engine.can_score_prompts is False
    assert engine.num_active == 0
