"""The device's own model: chunked prefill, absorbing received tokens, local decode.

A ``LocalSession`` holds one answer's KV cache. Its methods run torch and are called from the
client's single worker thread, one at a time; the asyncio side reads ``progress()`` snapshots
(thread-safe). The answer drives it in this order: ``apply_keep_set`` (optional, any time before
the prompt is done), ``prefill_chunk`` until ``is_prompt_done``, ``absorb`` the received cloud
tokens, then ``next_token`` / ``absorb([token])`` per local token.

Answer token ``i`` sits at position ``L + i`` (L = full prompt length) whether or not refinement
skipped prompt tokens, so every token keeps its true position.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch

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


class LocalSession:
    def __init__(
        self,
        lm: LoadedModel,
        prompt_ids: list[int],
        chunk_tokens: int = 128,
        slowdown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert prompt_ids, "empty prompt"
        self._lm = lm
        self._clock = clock
        self._chunk = chunk_tokens
        self._slowdown = slowdown
        self._lock = threading.Lock()
        self._todo = list(range(len(prompt_ids)))  # prompt positions still to prefill
        self._in_flight = 0  # prompt tokens in the forward running now
        self.prompt_ids = prompt_ids
        self.cache = new_cache(lm.model)
        self.prompt_done = 0
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
            )

    def apply_keep_set(self, kept_positions: list[int]) -> None:
        """Refinement: of the positions not prefilled yet, keep only these."""
        keep = set(kept_positions)
        with self._lock:
            self._todo = [p for p in self._todo if p in keep]

    def _forward(self, token_ids: list[int], positions: list[int]) -> float:
        """One forward; returns its (emulated) duration."""
        start = self._clock()
        self.logits = forward_tokens(self._lm.model, token_ids, positions, self.cache)
        elapsed = self._clock() - start
        if self._slowdown > 1.0:  # emulate a device K times slower than this machine
            time.sleep((self._slowdown - 1.0) * elapsed)
        return elapsed * self._slowdown

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
