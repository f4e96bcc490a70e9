"""The device's own model: chunked prefill, absorbing received tokens, local decode.

A ``LocalSession`` holds one answer's KV cache. Its methods run torch and are called from the
client's single worker thread, one at a time; the asyncio side reads ``progress()`` snapshots
(thread-safe). The answer drives it in this order: ``apply_keep_set`` (optional, any time before
the prompt is done), ``prefill_chunk`` until ``is_prompt_done``, ``absorb`` the received cloud
tokens, then ``next_token`` / ``absorb([token])`` per local token.

Answer token ``i`` sits at position ``L + i`` (L = full prompt length) whether or not refinement
skipped prompt tokens, so every token keeps its true position.

A session (``session.py``) starts each turn's ``LocalSession`` from a ``KVPrefix``: the cache of
the conversation so far, so only the new tokens are prefilled. ``kv_prefix`` hands the cache
back, cut to the longest prefix it holds of a given history at positions 0 .. n-1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from common.forward import forward_tokens, new_cache
from common.messages import SamplingParams
from common.model import LoadedModel
from common.sampling import sample_token

from .speed_controller import DeviceProgress


def fit_token_cost(chunks: list[tuple[float, float]]) -> tuple[float, float] | None:
    """alpha + beta * position (s/token) from the chunks so far: anchored at the latest chunk,
    the slope fitted over the chunks after the first (a session's first forward is slowed by
    warm-up, which flattened a plain least-squares slope to ~0). beta >= 0: attention never makes
    tokens cheaper."""
    if not chunks:
        return None
    body = chunks[1:] if len(chunks) >= 3 else []
    beta = 0.0
    if body:
        xs, ys = [c[0] for c in body], [c[1] for c in body]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mean_x) ** 2 for x in xs)
        if var > 0:
            cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
            beta = max(cov / var, 0.0)
    last_x, last_y = chunks[-1]
    return last_y - beta * last_x, beta


@dataclass
class KVPrefix:
    """A KV cache holding exactly ``token_ids`` at positions 0 .. n-1 (a conversation so far)."""

    cache: DynamicCache
    token_ids: list[int]

    def __len__(self) -> int:
        return len(self.token_ids)

    def keep(self, n: int) -> KVPrefix | None:
        """The first ``n`` tokens (the cache is cut in place); None for none."""
        if n <= 0:
            return None
        extra = self.cache.get_seq_length() - n
        if extra > 0:
            self.cache.crop(-extra)
        return KVPrefix(self.cache, self.token_ids[:n])

    @property
    def nbytes(self) -> int:
        """Bytes of the keys and values held."""
        return sum(
            layer.keys.nbytes + layer.values.nbytes
            for layer in self.cache.layers
            if getattr(layer, "is_initialized", False)
        )


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class LocalSession:
    def __init__(
        self,
        lm: LoadedModel,
        prompt_ids: list[int],
        chunk_tokens: int = 128,
        slowdown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        prefix: KVPrefix | None = None,
    ) -> None:
        """``prefix``: a cache that already holds the first ``len(prefix)`` prompt tokens (taken
        over, not copied); at least the last prompt token is always prefilled, for its logits."""
        assert prompt_ids, "empty prompt"
        num_cached = len(prefix) if prefix is not None else 0
        assert num_cached < len(prompt_ids), "the last prompt token must be prefilled"
        assert prefix is None or prompt_ids[:num_cached] == prefix.token_ids, "not a prefix"
        self._lm = lm
        self._clock = clock
        self._chunk = chunk_tokens
        self._slowdown = slowdown
        self._lock = threading.Lock()
        self._todo = list(range(num_cached, len(prompt_ids)))  # prompt positions to prefill
        self._in_flight = 0  # prompt tokens in the forward running now
        self.prompt_ids = prompt_ids
        self.cache = prefix.cache if prefix is not None else new_cache(lm.model)
        self.num_cached = num_cached  # prompt tokens in the cache before this answer
        # The ids the cache holds at positions 0 .. n-1 (up to the first gap refinement left).
        self._cache_ids: list[int] = list(prefix.token_ids) if prefix is not None else []
        self._is_contiguous = True
        self.prefill_s = 0.0  # (emulated) seconds spent prefilling this answer's prompt tokens
        self.prompt_done = num_cached
        self.absorbed = 0  # answer tokens in the cache
        self.logits: torch.Tensor | None = None  # for answer token ``absorbed``
        self.started_at: float | None = None
        self.recent_rate_tok_s: float | None = None  # the latest prefill chunk's tokens/s
        self.updated_at: float | None = None  # when the latest prefill chunk finished
        self._chunks: list[tuple[float, float]] = []  # (mid cache position, seconds per token)
        self.decode_s: list[float] = []  # (emulated) durations of single-token forwards

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def prompt_total(self) -> int:
        """Prompt tokens this session will have prefilled when done (kept ones only)."""
        with self._lock:
            return self.prompt_done + self._in_flight + len(self._todo)

    @property
    def is_prompt_done(self) -> bool:
        with self._lock:
            return not self._todo and not self._in_flight

    def progress(self) -> DeviceProgress:
        """The prompt prefill so far (the answer state adds what is left to absorb)."""
        with self._lock:
            # The chunk in flight is not done: leaving it out made the controller's T̂own one
            # chunk early (1.3-1.7 s at 1k tokens, measured) for most of the prefill.
            total = self.prompt_done + self._in_flight + len(self._todo)
            return DeviceProgress(
                total,
                self.prompt_done,
                started_at=self.started_at,
                recent_rate_tok_s=self.recent_rate_tok_s,
                updated_at=self.updated_at,
                token_cost=fit_token_cost(self._chunks),
                prompt_cached=self.num_cached,
            )

    def apply_keep_set(self, kept_positions: list[int]) -> None:
        """Refinement: of the positions not prefilled yet, keep only these."""
        keep = set(kept_positions)
        with self._lock:
            self._todo = [p for p in self._todo if p in keep]

    def _forward(self, token_ids: list[int], positions: list[int]) -> float:
        """One forward; returns its (emulated) duration."""
        self._record(token_ids, positions)
        start = self._clock()
        self.logits = forward_tokens(self._lm.model, token_ids, positions, self.cache)
        elapsed = self._clock() - start
        if self._slowdown > 1.0:  # emulate a device K times slower than this machine
            time.sleep((self._slowdown - 1.0) * elapsed)
        return elapsed * self._slowdown

    def _record(self, token_ids: list[int], positions: list[int]) -> None:
        """Track which ids sit at positions 0 .. n-1 of the cache (for ``kv_prefix``)."""
        if not self._is_contiguous:
            return
        for token_id, position in zip(token_ids, positions, strict=True):
            if position != len(self._cache_ids):
                self._is_contiguous = False  # a refinement gap: later entries are not a prefix
                return
            self._cache_ids.append(token_id)

    def cached_prefix_len(self, history: list[int]) -> int:
        """How many leading tokens of ``history`` the cache holds."""
        return min(common_prefix_len(self._cache_ids, history), self.cache.get_seq_length())

    def kv_prefix(self, history: list[int]) -> KVPrefix | None:
        """The cache cut to the longest prefix of ``history`` it holds; call it only when no
        forward runs (from the worker thread). This session must not be used afterwards."""
        n = self.cached_prefix_len(history)
        return KVPrefix(self.cache, self._cache_ids[:n]).keep(n)

    def prefill_chunk(self) -> int:
        """Prefill the next chunk of the (kept) prompt; return how many tokens it covered."""
        with self._lock:
            positions, self._todo = self._todo[: self._chunk], self._todo[self._chunk :]
            self._in_flight = len(positions)
            if self.started_at is None:
                self.started_at = self._clock()
        if positions:
            duration = self._forward([self.prompt_ids[p] for p in positions], positions)
            with self._lock:
                self._chunks.append(
                    (self.prompt_done + len(positions) / 2, duration / len(positions))
                )
                self.prompt_done += len(positions)
                self.prefill_s += duration
                self._in_flight = 0
                self.recent_rate_tok_s = len(positions) / max(duration, 1e-9)
                self.updated_at = self._clock()
        return len(positions)

    def absorb(self, token_ids: list[int]) -> None:
        """Feed answer tokens ``absorbed .. absorbed + n - 1`` (received cloud tokens, or our own)."""
        assert self.is_prompt_done, "absorb after the prompt"
        start = self.prompt_len + self.absorbed
        duration = self._forward(token_ids, list(range(start, start + len(token_ids))))
        with self._lock:
            self.absorbed += len(token_ids)
        if len(token_ids) == 1:
            self.decode_s.append(duration)

    def next_token(self, sampling: SamplingParams) -> int:
        """Sample answer token ``absorbed`` from the logits of the last forward."""
        assert self.logits is not None, "nothing prefilled yet"
        return sample_token(self.logits, sampling, self.absorbed)
