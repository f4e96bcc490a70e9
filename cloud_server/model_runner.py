"""The model seam: prefill one sequence, decode a round of sequences.

This runner keeps one KV cache per sequence and decodes them one forward each; a batched runner
(issue 6) replaces ``decode`` without touching the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.forward import forward_tokens, new_cache
from common.messages import KeepSet
from common.model import LoadedModel
from common.sampling import sample_token

from .refine import Refiner
from .sequence import Sequence


@dataclass(frozen=True)
class PrefillOutput:
    token_id: int  # the first answer token (index 0)
    keep_set: KeepSet | None  # None when the request asked for no refinement


class ModelRunner:
    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.refiner = Refiner(loaded.model, tokenizer=loaded.tokenizer)

    def prefill(self, seq: Sequence) -> PrefillOutput:
        """Fill ``seq``'s cache with its prompt and sample the first token."""
        model = self.loaded.model
        seq.kv = new_cache(model)
        positions = list(range(seq.num_prompt_tokens))
        ratio = seq.request.refine_ratio
        keep_set = None
        if ratio > 0:
            with self.refiner.capture(ratio) as cap:
                logits = forward_tokens(model, seq.prompt_ids, positions, seq.kv)
            keep_set = cap.keep_set(seq.prompt_ids, ratio)
        else:
            logits = forward_tokens(model, seq.prompt_ids, positions, seq.kv)
        token_id = sample_token(logits, seq.request.sampling, index=0)
        self.loaded.platform.synchronize()
        return PrefillOutput(token_id=token_id, keep_set=keep_set)

    def decode(self, seqs: list[Sequence]) -> list[int]:
        """One next token for each sequence, in order (one forward per sequence for now)."""
        model = self.loaded.model
        next_ids = []
        for seq in seqs:
            logits = forward_tokens(model, [seq.last_token_id], [seq.last_position], seq.kv)
            next_ids.append(sample_token(logits, seq.request.sampling, index=seq.num_tokens))
        return next_ids

    def warm_up(self) -> None:
        """One tiny prefill and decode, so the first request does not pay for lazy init."""
        cache = new_cache(self.loaded.model)
        forward_tokens(self.loaded.model, [0, 1, 2, 3], [0, 1, 2, 3], cache)
        forward_tokens(self.loaded.model, [4], [4], cache)
        self.loaded.platform.synchronize()

    def release(self, seq: Sequence) -> None:
        seq.kv = None
