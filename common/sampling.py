"""Sampling, reproducible across the handoff: token ``index`` uses a generator seeded from
(seed, index), so cloud and device draw the same token from the same logits."""

from __future__ import annotations

import torch

from .messages import SamplingParams

_INDEX_STRIDE = 1_000_003  # keeps (seed, index) pairs apart


def sample_token(logits: torch.Tensor, params: SamplingParams, index: int) -> int:
    """``logits``: [vocab] for answer token ``index``. Runs on CPU in fp32 on every platform."""
    logits = logits.detach().float().cpu()
    if params.is_greedy:
        return int(torch.argmax(logits))
    scores = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cum = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_scores, dim=-1) >= params.top_p  # keep the top token
        scores[order[drop]] = float("-inf")
    probs = torch.softmax(scores, dim=-1)
    gen = torch.Generator().manual_seed((params.seed * _INDEX_STRIDE + index) % (2**63))
    return int(torch.multinomial(probs, 1, generator=gen))
