"""The cloud's prefix cache: the KV of recent prompts, so a prompt that repeats one (a chat's
history, a shared system prompt) prefills only the part past the longest cached prefix.

Bounded by a memory budget; the least recently used prompt is evicted first. An entry holds
the prompt's token ids and, per layer, its keys and values ``[1, kv_heads, T, head_dim]``. The
tensors are shared, never copied: transformers' ``DynamicCache`` and ``DecodeBatch`` only ever
build new tensors (``torch.cat``, ``index_select``), so a cached tensor is never written again.
Owned by the model runner (the engine's worker thread): no lock.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), [1, heads, T, dim]


@dataclass(eq=False)
class _Entry:
    ids: np.ndarray  # [T] int64, the prompt
    kv: KV
    num_bytes: int
    key: int = field(default_factory=itertools.count().__next__)


class PrefixCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first

    @property
    def num_entries(self) -> int:
        return len(self._entries)

    def lookup(self, prompt_ids: list[int], max_tokens: int) -> tuple[int, KV | None]:
        """The longest cached prefix of ``prompt_ids`` (at most ``max_tokens`` long): its length
        and its KV, or (0, None). A hit becomes the most recently used entry."""
        if not self._entries or max_tokens <= 0:
            return 0, None
        ids = np.asarray(prompt_ids[:max_tokens], dtype=np.int64)
        best, best_len = None, 0
        for entry in self._entries.values():
            n = min(len(entry.ids), len(ids))
            differ = np.flatnonzero(entry.ids[:n] != ids[:n])
            length = int(differ[0]) if differ.size else n
            if length > best_len:
                best, best_len = entry, length
        if best is None:
            return 0, None
        self._entries.move_to_end(best.key)
        return best_len, [(k[:, :, :best_len], v[:, :, :best_len]) for k, v in best.kv]

    def insert(self, prompt_ids: list[int], kv: KV) -> None:
        """Cache a prompt's KV (``T == len(prompt_ids)``); drop the entries it extends, then
        evict the least recently used until the budget holds."""
        num_bytes = sum(k.nbytes + v.nbytes for k, v in kv)
        if num_bytes > self.max_bytes:
            return
        ids = np.asarray(prompt_ids, dtype=np.int64)
        for key, entry in list(self._entries.items()):
            if len(entry.ids) <= len(ids) and np.array_equal(entry.ids, ids[: len(entry.ids)]):
                self._drop(key)  # the new prompt holds all of it
        entry = _Entry(ids, kv, num_bytes)
        self._entries[entry.key] = entry
        self.num_bytes += num_bytes
        while self.num_bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        self.num_bytes -= self._entries.pop(key).num_bytes
