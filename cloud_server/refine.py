"""Prompt refinement: the cloud tells the device which prompt tokens it may skip.

The engine wraps the prefill forward in ``Refiner.capture()`` and asks the capture for the
keep-set afterwards::

    with refiner.capture(refine_ratio) as cap:          # ratio 0: no hooks at all
        logits = forward_tokens(model, prompt_ids, positions, cache)
    keep_set = cap.keep_set(prompt_ids, refine_ratio)   # -> common.messages.KeepSet

A prompt prefilled in chunks (with other requests' decode rounds in between) keeps one capture
from ``Refiner.start()`` and records only its own forwards, ``with cap.recording(): ...`` around
each chunk; the keep-set after the last chunk is the whole prompt's.

Scoring (SnapKV-style, see docs/refinement.md): the attention the last ``window`` prompt positions
pay to every prompt token, softmax per head, summed over heads, queries and a few layers, then
max-pooled over neighbouring tokens so phrases are kept whole. The chat-template prefix (through
the first user turn header) and the last ``window`` tokens are always kept; of the rest the best
scored are kept until ``L - floor(rho * L)`` positions are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common.messages import KeepSet
from common.timing_model import kept_prompt_len

from .refine_scores import ScoreRecorder, default_score_layers, unsupported_reason
from .scheduler import REFINE_WINDOW

_SENTINEL = "\u2063PDD_CONTENT\u2063"  # stands in for the user's text when reading the template


@dataclass(frozen=True)
class RefineConfig:
    score_layers: tuple[int, ...] | None = None  # None: 4 layers spread over the upper depth
    window: int = REFINE_WINDOW  # W: scoring queries, and the tail that is always kept
    pool_kernel: int = 7  # max-pool width over neighbouring tokens (odd)
    num_sink_tokens: int = 4  # always kept when no chat template prefix is found


def num_kept(num_prompt: int, refine_ratio: float) -> int:
    """L - floor(rho * L): the count the keep-set aims at (protected tokens may push it up)."""
    return kept_prompt_len(num_prompt, refine_ratio)


def select_positions(
    scores: torch.Tensor,
    num_keep: int,
    num_prefix: int,
    window: int,
    pool_kernel: int,
) -> list[int]:
    """Sorted positions: the protected prefix and tail, then the best max-pooled scores.

    scores: [L]. Keeps ``max(num_keep, protected)`` positions, ``L`` if ``num_keep >= L``.
    """
    num_prompt = scores.shape[0]
    if num_keep >= num_prompt:
        return list(range(num_prompt))
    pad = pool_kernel // 2
    pooled = F.max_pool1d(scores.float()[None, None], pool_kernel, stride=1, padding=pad)[0, 0]
    protected = torch.zeros(num_prompt, dtype=torch.bool)  # [L]
    protected[: min(num_prefix, num_prompt)] = True
    protected[max(num_prompt - window, 0) :] = True
    pooled = pooled.masked_fill(protected, float("inf"))  # [L]
    count = max(num_keep, int(protected.sum()))
    kept = torch.topk(pooled, count, sorted=False).indices
    return sorted(int(i) for i in kept)


def user_header_ids(tokenizer) -> list[int]:
    """Token ids of the first user turn header (e.g. ``<|im_start|>user\\n``); [] without one."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return []
    messages = [{"role": "user", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    if _SENTINEL not in text:
        return []
    before = tokenizer(text[: text.index(_SENTINEL)], add_special_tokens=False).input_ids
    special = set(tokenizer.all_special_ids)
    starts = [i for i, tok in enumerate(before) if tok in special]
    return list(before[starts[-1] :]) if starts else []


def protected_prefix_len(prompt_ids: list[int], header: list[int], num_sink_tokens: int) -> int:
    """Positions before the end of the first user turn header (system part included)."""
    for size in (len(header), len(header) - 1):  # the header's last token may merge with text
        if size <= 0:
            break
        for start in range(len(prompt_ids) - size + 1):
            if prompt_ids[start : start + size] == header[:size]:
                return max(start + size, num_sink_tokens)
    return num_sink_tokens


def _all_positions(num_prompt: int) -> KeepSet:
    return KeepSet(is_available=True, kept_positions=list(range(num_prompt)))


class Capture:
    """What one prefill left behind; ``keep_set`` turns it into kept positions."""

    def __init__(self, refiner: Refiner, recorder: ScoreRecorder | None, reason: str) -> None:
        self._refiner = refiner
        self._recorder = recorder
        self._reason = reason  # why there are no scores, when there are none
        self._scores: torch.Tensor | None = None  # [L], once computed

    @contextmanager
    def recording(self) -> Iterator[Capture]:
        """Record the forward(s) inside (one chunk of this prompt): the hooks are on only then,
        so other requests' forwards between two chunks are not recorded."""
        recorder = self._recorder
        if recorder is None:
            yield self
            return
        recorder.attach()
        try:
            yield self
        finally:
            recorder.detach()

    def after_prefix(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The prompt's first positions come from a cached prefix (``kv``, per layer): their
        keys are scored from it, the positions after it as they are prefilled."""
        if self._recorder is not None:
            self._recorder.seed_keys(kv)

    def keep_set(self, prompt_ids: list[int], refine_ratio: float) -> KeepSet:
        num_prompt = len(prompt_ids)
        if refine_ratio <= 0.0:
            return _all_positions(num_prompt)
        scores, reason = self._scores_for(num_prompt)
        if scores is None:
            return KeepSet(is_available=False, reason=reason)
        config = self._refiner.config
        kept = select_positions(
            scores,
            num_kept(num_prompt, refine_ratio),
            protected_prefix_len(prompt_ids, self._refiner.header_ids, config.num_sink_tokens),
            config.window,
            config.pool_kernel,
        )
        return KeepSet(is_available=True, kept_positions=kept)

    def _scores_for(self, num_prompt: int) -> tuple[torch.Tensor | None, str]:
        """The [L] scores (computed once, later ratios reuse them), or why there are none."""
        recorder = self._recorder
        if self._scores is None and recorder is not None:
            if recorder.error:
                return None, recorder.error
            if recorder.num_positions == 0:
                return None, "no attention scores were captured during the prefill"
            self._scores = recorder.scores()
            self._recorder = None  # free the captured tensors
        if self._scores is None:
            return None, self._reason
        if self._scores.shape[0] != num_prompt:
            return None, f"scored {self._scores.shape[0]} positions, the prompt has {num_prompt}"
        return self._scores, ""


class Refiner:
    """One per engine. ``tokenizer`` lets it find the chat-template prefix to protect."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer=None,
        config: RefineConfig | None = None,
    ) -> None:
        self.model = model
        self.config = config or RefineConfig()
        self.header_ids = user_header_ids(tokenizer)
        self.unsupported = unsupported_reason(model)
        num_layers = int(getattr(model.config, "num_hidden_layers", 0))
        self.score_layers = self.config.score_layers or default_score_layers(num_layers)

    def start(self, refine_ratio: float | None = None) -> Capture:
        """A capture for one prompt, recording nothing yet (``Capture.recording``).
        ``refine_ratio == 0`` registers no hooks (costs nothing)."""
        if refine_ratio is not None and refine_ratio <= 0.0:
            return Capture(self, None, "refinement is off (refine ratio 0)")
        if self.unsupported:
            return Capture(self, None, self.unsupported)
        return Capture(self, ScoreRecorder(self.model, self.score_layers, self.config.window), "")

    @contextmanager
    def capture(self, refine_ratio: float | None = None) -> Iterator[Capture]:
        """Wrap a whole-prompt prefill forward: ``start`` and ``recording`` in one."""
        with self.start(refine_ratio).recording() as cap:
            yield cap
