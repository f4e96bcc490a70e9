"""The device side of refinement: gapped positions reproduce or preserve the answer."""

from __future__ import annotations

import torch

from benchmarks.studies.refine_quality import device_run

NUM_NEW = 12
ANSWER = "orange"  # the needle of conftest.needle_prompt_text


def test_all_positions_through_gapped_path_reproduce_greedy(loaded_model, captured):
    """Keep-set at rho 0 prefilled with explicit positions == plain greedy generate."""
    ids = captured.ids
    kept = captured.cap.keep_set(ids, 0.0).kept_positions
    run = device_run(loaded_model, [ids[p] for p in kept], kept, len(ids), NUM_NEW)
    with torch.inference_mode():
        out = loaded_model.model.generate(
            torch.tensor([ids]), max_new_tokens=NUM_NEW, do_sample=False
        )
    expected = out[0, len(ids) :].tolist()
    assert run.tokens == expected[: len(run.tokens)] and len(run.tokens) >= 8


def test_refined_prefill_keeps_the_asked_for_fact(loaded_model, captured):
    ids, tok = captured.ids, loaded_model.tokenizer
    kept = captured.cap.keep_set(ids, 0.5).kept_positions
    assert ANSWER in tok.decode([ids[p] for p in kept])
    run = device_run(loaded_model, [ids[p] for p in kept], kept, len(ids), 16)
    assert ANSWER in tok.decode(run.tokens)
    # the naive keep-last-half baseline cuts the fact out (it sits at 20% depth)
    assert ANSWER not in tok.decode(ids[len(ids) - len(kept) :])
