"""The forward step both sides run: no warning from transformers (a deprecated argument warns
first and breaks on a later upgrade), and the cache argument really carries the KV."""

from __future__ import annotations

import warnings

import torch

from common.forward import forward_tokens, new_cache


def test_a_forward_pass_with_a_cache_does_not_warn(loaded_model):
    model = loaded_model.model
    ids = loaded_model.encode("Why is the sky blue?")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test, deprecations included
        cache = new_cache(model)
        logits = forward_tokens(model, ids, list(range(len(ids))), cache)
        next_id = int(torch.argmax(logits))
        step = forward_tokens(model, [next_id], [len(ids)], cache)
    assert cache.get_seq_length() == len(ids) + 1  # the cache was used, not ignored
    whole = forward_tokens(model, [*ids, next_id], list(range(len(ids) + 1)), new_cache(model))
    assert torch.allclose(step, whole, atol=1e-4)  # cached decode = one forward over it all
