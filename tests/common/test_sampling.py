"""The sampler at the edges of what the API accepts: no overflow, no NaN, no error."""

from __future__ import annotations

import pytest
import torch

from common.messages import SamplingParams
from common.sampling import sample_token, sampling_probs

LOGITS = torch.tensor([3.0, 12.5, 12.4, -7.0, 0.0, 12.5 - 1e-6])  # a near-tie at the top


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1e-300, seed=1),
        SamplingParams(temperature=8.5e-38, seed=2),  # a float32 subnormal
        SamplingParams(temperature=5e-324, seed=3),  # the smallest positive double
        SamplingParams(temperature=0.8, top_p=1e-300, seed=4),
        SamplingParams(temperature=5e-324, top_p=5e-324, top_k=1, seed=5),
    ],
)
def test_extreme_values_draw_the_best_token(params):
    for index in range(5):
        assert sample_token(LOGITS, params, index) == 1
    probs = sampling_probs(LOGITS, params)
    assert torch.isfinite(probs).all() and float(probs.sum()) == pytest.approx(1.0)


def test_the_hottest_temperature_and_float16_logits_are_safe():
    hot = SamplingParams(temperature=10.0, seed=6)
    draws = {sample_token(LOGITS.half(), hot, i) for i in range(200)}
    assert len(draws) == len(LOGITS), "at temperature 10 every token is drawn"
    big = torch.tensor([3e38, -3e38, 0.0])  # the largest float32 values
    assert sample_token(big, SamplingParams(temperature=1e-300, seed=1), 0) == 0


def test_top_p_and_top_k_keep_exactly_the_best_tokens():
    probs = sampling_probs(LOGITS, SamplingParams(temperature=1.0, top_p=0.5))
    assert probs.nonzero().flatten().tolist() == [1, 5]  # 1 alone has < 0.5 of the mass
    probs = sampling_probs(LOGITS, SamplingParams(temperature=1.0, top_k=3))
    assert probs.nonzero().flatten().tolist() == [1, 2, 5]


def test_a_seeded_draw_depends_only_on_seed_index_and_logits():
    params = SamplingParams(temperature=1.0, seed=11)
    flat = torch.zeros(1000)
    draws = [sample_token(flat, params, i) for i in range(50)]
    assert draws == [sample_token(flat.float(), params, i) for i in range(50)]
    assert len(set(draws)) > 40, "indices draw independently"
    assert draws != [
        sample_token(flat, params.model_copy(update={"seed": 12}), i) for i in range(50)
    ]


def test_masked_tokens_are_never_drawn_and_broken_logits_raise():
    hot = SamplingParams(temperature=10.0, seed=8)
    masked = torch.tensor([0.0, float("-inf"), 1.0, float("-inf")])  # another engine's mask
    assert {sample_token(masked, hot, i) for i in range(100)} == {0, 2}
    for broken in ([0.0, float("nan")], [0.0, float("inf")], [float("-inf")] * 2):
        with pytest.raises(ValueError, match="cannot sample"):
            sample_token(torch.tensor(broken), hot, 0)
