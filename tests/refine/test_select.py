"""The keep-set rule on its own: counts, order, protected positions, pooling (no model)."""

from __future__ import annotations

import math

import pytest
import torch

from cloud_server.refine import num_kept, protected_prefix_len, select_positions


@pytest.mark.parametrize("num_prompt", [1, 7, 100, 1001])
@pytest.mark.parametrize("rho", [0.0, 0.25, 0.29, 0.5, 0.75, 0.9])
def test_num_kept_is_l_minus_floor_rho_l(num_prompt, rho):
    assert num_kept(num_prompt, rho) == num_prompt - math.floor(round(rho * num_prompt, 6))


def test_select_keeps_prefix_tail_and_best_scores_sorted():
    scores = torch.zeros(100)
    scores[50] = 5.0  # one clear winner in the middle
    kept = select_positions(scores, num_keep=30, num_prefix=10, window=8, pool_kernel=5)
    assert kept == sorted(set(kept)) and len(kept) == 30
    assert set(range(10)) <= set(kept) and set(range(92, 100)) <= set(kept)
    assert {48, 49, 50, 51, 52} <= set(kept)  # max-pooling keeps the winner's neighbours


def test_select_without_pooling_keeps_only_the_winner():
    scores = torch.zeros(100)
    scores[50] = 5.0
    kept = select_positions(scores, num_keep=19, num_prefix=10, window=8, pool_kernel=1)
    assert 50 in kept and 49 not in kept and 51 not in kept


def test_select_never_drops_protected_positions_even_over_budget():
    kept = select_positions(torch.rand(40), num_keep=5, num_prefix=20, window=10, pool_kernel=3)
    assert kept == list(range(20)) + list(range(30, 40))


def test_select_keeps_everything_when_budget_covers_prompt():
    assert select_positions(torch.rand(12), 12, 2, 2, 3) == list(range(12))


def test_protected_prefix_ends_after_first_user_header():
    header = [1, 4093, 198]
    prompt = [1, 9690, 198, 5, 6, 2, 198, 1, 4093, 198, 70, 71, 1, 4093, 198]
    assert protected_prefix_len(prompt, header, num_sink_tokens=4) == 10
    assert protected_prefix_len([70, 71, 72, 73, 74], header, num_sink_tokens=4) == 4
    assert protected_prefix_len(prompt, [], num_sink_tokens=2) == 2
