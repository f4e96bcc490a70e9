"""Batched decode: the running sequences' KV caches kept as one left-padded batch.

Each request is prefilled alone into its own ``DynamicCache`` (so refinement hooks see one prompt,
and a gapped prompt keeps its true positions). Before its first decode step the request joins the
batch: its KV is left-padded to the batch length and concatenated on the batch axis, once. Every
decode step is then one forward over all rows (``[B, 1]`` tokens, per-row positions, a ``[B, T]``
padding mask), and a row leaves by index selection when its request ends. Padding columns that no
row needs any more are trimmed, so a long request leaving does not tax the others.

Why not transformers' ``ContinuousBatchingManager``: it samples inside its own loop from a global
RNG and hands back tokens, never logits, so our per-index seeded ``sample_token`` (the property
that a pd answer equals the device-only one) cannot run; and it packs prefills of several requests
into one forward, which breaks the per-request attention capture that refinement needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from common.forward import cache_kwargs

from .sequence import Sequence


def kv_of(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def set_kv(cache: DynamicCache, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for layer, (keys, values) in zip(cache.layers, kv, strict=True):
        if not layer.is_initialized:
            layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values


def _left_pad(x: torch.Tensor, num: int, dim_from_end: int) -> torch.Tensor:
    """Pad ``num`` zeros in front along the dimension ``dim_from_end`` places from the end."""
    if num == 0:
        return x
    pad = [0, 0] * (dim_from_end - 1) + [num, 0]
    return F.pad(x, pad)


class DecodeBatch:
    """Rows of running sequences: KV per layer ``[B, heads, T, head_dim]``, mask ``[B, T]``."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.seqs: list[Sequence] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [B, T] long, 1 = a real token

    @property
    def num_rows(self) -> int:
        return len(self.seqs)

    @property
    def length(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def add(self, seq: Sequence, cache: DynamicCache) -> None:
        """Move ``seq``'s own prefilled cache (batch 1) into the batch as a new row."""
        row_kv = kv_of(cache)
        row_len = row_kv[0][0].shape[2]
        row_mask = torch.ones(1, row_len, dtype=torch.long, device=row_kv[0][0].device)
        if self.cache is None:
            self.cache, self.mask = cache, row_mask
        else:
            assert self.mask is not None
            new_len = max(self.length, row_len)
            grow, row_grow = new_len - self.length, new_len - row_len
            kv = [
                (
                    torch.cat([_left_pad(k, grow, 2), _left_pad(rk, row_grow, 2)]),
                    torch.cat([_left_pad(v, grow, 2), _left_pad(rv, row_grow, 2)]),
                )
                for (k, v), (rk, rv) in zip(kv_of(self.cache), row_kv, strict=True)
            ]
            set_kv(self.cache, kv)
            self.mask = torch.cat([_left_pad(self.mask, grow, 1), _left_pad(row_mask, row_grow, 1)])
        self.seqs.append(seq)

    def remove(self, seqs: list[Sequence]) -> None:
        """Drop these rows (unknown sequences are ignored) and trim all-padding columns."""
        drop = set(seqs)
        keep = [i for i, s in enumerate(self.seqs) if s not in drop]
        if len(keep) == len(self.seqs):
            return
        self.seqs = [self.seqs[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, None
            return
        assert self.cache is not None and self.mask is not None
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        start = int((mask.sum(0) == 0).long().cumprod(0).sum())  # leading all-padding columns
        self.mask = mask[:, start:]
        kv = [
            (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
            for k, v in kv_of(self.cache)
        ]
        set_kv(self.cache, kv)

    @torch.inference_mode()
    def forward(self) -> torch.Tensor:
        """One decode step for every row (its last token); returns logits ``[B, vocab]``."""
        assert self.cache is not None and self.mask is not None
        device = self.mask.device
        input_ids = torch.tensor([[s.last_token_id] for s in self.seqs], device=device)  # [B, 1]
        positions = torch.tensor([[s.last_position] for s in self.seqs], device=device)  # [B, 1]
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.num_rows, 1)], dim=1)  # [B, T+1]
        out = self.model(
            input_ids=input_ids,
            position_ids=positions,
            attention_mask=self.mask,
            **cache_kwargs(self.model, self.cache),
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]  # [B, vocab]
