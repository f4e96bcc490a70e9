"""Refinement with the real model: scores, keep-sets, hooks, unsupported models."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from cloud_server.refine import RefineConfig, Refiner
from common.forward import forward_tokens, new_cache

SMOLLM_PREFIX = 24  # system turn + "<|im_start|>user\n" of SmolLM2's chat template


def _num_hooks(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("rho", [0.25, 0.5, 0.75, 0.9])
def test_keep_set_shape_and_protected_positions(captured, refiner, rho):
    ids = captured.ids
    keep = captured.cap.keep_set(ids, rho)
    kept = keep.kept_positions
    assert keep.is_available
    assert kept == sorted(set(kept)) and kept[0] >= 0 and kept[-1] < len(ids)
    window = refiner.config.window
    # L - floor(rho * L), unless the protected prefix + tail alone are more (rho 0.9 here)
    assert len(kept) == max(len(ids) - math.floor(rho * len(ids)), SMOLLM_PREFIX + window)
    assert set(range(SMOLLM_PREFIX)) <= set(kept)
    assert set(range(len(ids) - window, len(ids))) <= set(kept)


def test_header_found_from_the_tokenizer(refiner, loaded_model):
    assert loaded_model.tokenizer.decode(refiner.header_ids) == "<|im_start|>user\n"


def test_ratio_zero_registers_no_hooks_and_keeps_all(loaded_model, refiner):
    model, ids = loaded_model.model, list(range(100, 140))
    before = _num_hooks(model)
    with refiner.capture(0.0) as cap:
        assert _num_hooks(model) == before
        forward_tokens(model, ids, list(range(len(ids))), new_cache(model))
    assert cap.keep_set(ids, 0.0).kept_positions == list(range(len(ids)))
    assert not cap.keep_set(ids, 0.5).is_available  # nothing was captured


def test_hooks_are_removed_after_capture(loaded_model, refiner):
    model = loaded_model.model
    before = _num_hooks(model)
    with refiner.capture():
        assert _num_hooks(model) == before + 1 + 2 * len(refiner.score_layers)
    assert _num_hooks(model) == before


def test_scores_match_eager_attention(loaded_model, captured):
    """The hooked q/k with RoPE give the attention weights eager attention computes."""
    eager = AutoModelForCausalLM.from_pretrained(loaded_model.path, attn_implementation="eager")
    refiner = Refiner(eager, loaded_model.tokenizer, RefineConfig(score_layers=(3, 17)))
    ids = captured.ids[:120]
    with torch.inference_mode(), refiner.capture() as cap:
        out = eager(input_ids=torch.tensor([ids]), output_attentions=True)
    scores = cap._scores_for(len(ids))[0]  # [L]
    expected = sum(out.attentions[i][0, :, -32:, :].sum(dim=(0, 1)) for i in (3, 17))  # [L]
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


def test_chunked_prefill_scores_like_one_forward(loaded_model, refiner, captured):
    model, ids = loaded_model.model, captured.ids
    half = len(ids) // 2
    cache = new_cache(model)
    with refiner.capture() as cap:
        forward_tokens(model, ids[:half], list(range(half)), cache)
        forward_tokens(model, ids[half:], list(range(half, len(ids))), cache)
    chunked = cap._scores_for(len(ids))[0]
    whole = captured.cap._scores_for(len(ids))[0]
    torch.testing.assert_close(chunked, whole, atol=1e-3, rtol=1e-3)


def test_wrong_length_prompt_is_refused(captured):
    keep = captured.cap.keep_set(captured.ids[:-1], 0.5)
    assert not keep.is_available and "prompt has" in keep.reason


def test_unsupported_architecture_says_why():
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32)
    model = GPT2LMHeadModel(config).eval()
    refiner = Refiner(model)
    with torch.inference_mode(), refiner.capture() as cap:
        model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    keep = cap.keep_set([1, 2, 3, 4], 0.5)
    assert not keep.is_available and "gpt2" in keep.reason
    assert cap.keep_set([1, 2, 3, 4], 0.0).kept_positions == [0, 1, 2, 3]
