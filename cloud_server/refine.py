"""Prompt refinement (placeholder until the scorer lands): the engine wraps its prefill forward
in ``Refiner.capture()`` and asks the capture for the keep-set afterwards.

Contract used by ``engine.py``::

    with refiner.capture() as cap:
        logits = forward_tokens(model, prompt_ids, positions, cache)
    keep_set = cap.keep_set(prompt_ids, refine_ratio)   # -> common.messages.KeepSet
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from common.messages import KeepSet


class Capture:
    def keep_set(self, prompt_ids: list[int], refine_ratio: float) -> KeepSet:
        return KeepSet(is_available=False, reason="prompt refinement is not implemented yet")


class Refiner:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @contextmanager
    def capture(self) -> Iterator[Capture]:
        yield Capture()
