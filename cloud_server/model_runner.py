"""The model seam: prefill one sequence (whole or a chunk), decode a round of sequences.

Prefill runs per request into the request's own cache (refinement hooks see one prompt, which the
scheduler therefore never chunks); a chunk continues the cache at its true positions. Decode
runs every running sequence in one forward through ``DecodeBatch``; sampling stays per row with
``sample_token(logits, params, index)``, so a batched answer equals the unbatched one.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.forward import forward_tokens, new_cache
from common.messages import KeepSet
from common.model import LoadedModel
from common.sampling import sample_token

from .decode_batch import DecodeBatch
from .logprobs import prompt_logprobs, token_logprob
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
        self.batch = DecodeBatch(loaded.model)

    def prefill(self, seq: Sequence, start: int, end: int) -> PrefillOutput | None:
        """Put prompt positions [start, end) into ``seq``'s cache; after the last chunk, sample
        the first token (None before it)."""
        model = self.loaded.model
        if start == 0:
            seq.kv = new_cache(model)
        ids, positions = seq.prompt_ids[start:end], list(range(start, end))
        ratio = seq.request.refine_ratio
        keep_set = None
        if ratio > 0:
            assert (start, end) == (0, seq.num_prompt_tokens), "refinement needs the whole prompt"
            with self.refiner.capture(ratio) as cap:
                logits = forward_tokens(model, ids, positions, seq.kv)
            keep_set = cap.keep_set(seq.prompt_ids, ratio)
        else:
            logits = forward_tokens(model, ids, positions, seq.kv)
        if end < seq.num_prompt_tokens:
            self.loaded.platform.synchronize()
            return None
        token_id = sample_token(logits, seq.request.sampling, index=0)
        self._note_logprobs(seq, logits, token_id)
        if seq.request.prompt_logprobs is not None:
            seq.prompt_logprobs = prompt_logprobs(
                model, seq.prompt_ids, seq.request.prompt_logprobs
            )
        self.loaded.platform.synchronize()
        return PrefillOutput(token_id=token_id, keep_set=keep_set)

    def decode(self, seqs: list[Sequence]) -> list[int]:
        """One next token for each sequence, in order, from one batched forward."""
        self.batch.sync(seqs)
        logits = self.batch.forward()  # [B, vocab], rows in self.batch.seqs order
        self.loaded.platform.synchronize()
        by_seq = {
            seq: sample_token(row, seq.request.sampling, index=seq.num_tokens)
            for seq, row in zip(self.batch.seqs, logits, strict=True)
        }
        for seq, row in zip(self.batch.seqs, logits, strict=True):
            self._note_logprobs(seq, row, by_seq[seq])
        return [by_seq[seq] for seq in seqs]

    @staticmethod
    def _note_logprobs(seq: Sequence, logits, token_id: int) -> None:
        """When asked for, the sampled token's logprob rides on its event (``append_token``)."""
        if seq.request.logprobs is not None:
            seq.next_logprob = token_logprob(logits, token_id, seq.request.logprobs)

    def warm_up(self) -> None:
        """One tiny prefill and decode, so the first request does not pay for lazy init."""
        cache = new_cache(self.loaded.model)
        forward_tokens(self.loaded.model, [0, 1, 2, 3], [0, 1, 2, 3], cache)
        forward_tokens(self.loaded.model, [4], [4], cache)
        self.loaded.platform.synchronize()

    def release(self, seq: Sequence) -> None:
        """Free ``seq``'s KV, its own cache or its batch row (the other rows are untouched)."""
        self.batch.remove([seq])
        seq.kv = None
