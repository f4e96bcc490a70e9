"""Sampling, reproducible across the handoff: token ``index`` uses a generator seeded from
(seed, index), so cloud and device draw the same token from the same logits.

Numerically safe for every value the API accepts (any temperature > 0, any top_p in (0, 1]):
the math is float64 and the scores are shifted so that the best is 0 before they are scaled, so
a tiny temperature sends the others to -inf (probability 0) and never overflows; the best token
is always kept by top-p. The draw is an inverse CDF over the vocabulary in id order with one
uniform number from the (seed, index) generator, a rule another engine can reproduce exactly.
"""

from __future__ import annotations

import torch

from .messages import SamplingParams

_INDEX_STRIDE = 1_000_003  # keeps (seed, index) pairs apart


def sample_token(logits: torch.Tensor, params: SamplingParams, index: int) -> int:
    """``logits``: [vocab] for answer token ``index``. Runs on CPU in float64 on every platform."""
    logits = logits.detach().cpu().double()
    if params.is_greedy:
        return int(torch.argmax(logits))
    cum = torch.cumsum(sampling_probs(logits, params), dim=0)  # [vocab], ends at 1
    gen = torch.Generator().manual_seed((params.seed * _INDEX_STRIDE + index) % (2**63))
    u = torch.rand(1, generator=gen, dtype=torch.float64)  # [1], in [0, 1)
    token = int(torch.searchsorted(cum, u * cum[-1], right=True))  # first id with cum > u
    return min(token, cum.numel() - 1)


def sampling_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution a non-greedy draw uses: temperature, then top-k, then top-p. [vocab]
    float64, summing to 1; zero for every token top-k or top-p removes."""
    logits = logits.double()
    best = logits.max()  # -inf entries are masked tokens; NaN or +inf is a broken model
    if bool(torch.isnan(logits).any()) or not bool(torch.isfinite(best)):
        raise ValueError("the logits hold NaN, +inf or no finite value; cannot sample")
    scores = (logits - best) / params.temperature  # <= 0, the best is exactly 0
    if 0 < params.top_k < scores.numel():
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.exp(scores)  # the best is 1, so the sum is >= 1
    probs /= probs.sum()
    if params.top_p < 1.0:
        probs = _top_p(probs, params.top_p)
    return probs


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the best tokens until the ones before reach ``top_p`` of the mass (the best always).

    Sorting the whole vocabulary costs 10-25 ms here; the best 256 usually reach ``top_p``, and
    then every other token is dropped anyway (the mass before it is at least theirs).
    """
    for k in (min(256, probs.numel()), probs.numel()):
        best, order = torch.topk(probs, k)  # [k], descending
        cum = torch.cumsum(best, dim=0)
        if float(cum[-1]) >= top_p or k == probs.numel():
            break
    keep = order[cum - best < top_p]  # the mass of the better tokens; 0 < top_p for the best
    kept = torch.zeros_like(probs)
    kept[keep] = probs[keep]
    return kept / kept.sum()
