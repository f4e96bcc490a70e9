"""The model seam: prefill one sequence (whole or a chunk), decode a round of sequences.

The runner is the one owner of every KV cache: a sequence being prefilled has its own
``DynamicCache`` here (a chunk continues the cache at its true positions; a refining prompt
keeps its score capture across its chunks, recording only its own forwards), and moves into the
``DecodeBatch`` at its first decode round. Decode runs every running sequence in one forward;
sampling stays per row with ``sample_token(logits, params, index)``, so a batched answer equals
the unbatched one, and a row whose sampling fails fails alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import DynamicCache

from common.forward import forward_tokens, new_cache
from common.messages import KeepSet
from common.model import LoadedModel
from common.sampling import sample_token

from .decode_batch import DecodeBatch, kv_of, set_kv
from .logprobs import prompt_logprobs, token_logprob
from .prefix_cache import PrefixCache
from .refine import Capture, Refiner
from .scheduler import max_cached_prefix
from .sequence import Sequence


@dataclass(frozen=True)
class SeqOutput:
    """What one step produced for one sequence."""

    seq: Sequence
    token_id: int | None = None  # None: a prefill chunk before the last, or an error
    keep_set: KeepSet | None = None  # the last prefill chunk of a refinement request
    error: Exception | None = None  # this sequence failed (its forward or its sampling)


class ModelRunner:
    def __init__(self, loaded: LoadedModel, prefix_cache_bytes: int = 0) -> None:
        self.loaded = loaded
        self.refiner = Refiner(loaded.model, tokenizer=loaded.tokenizer)
        self.batch = DecodeBatch(loaded.model)
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None
        self._caches: dict[Sequence, DynamicCache] = {}  # prefilling, or prefilled, not batched
        self._captures: dict[Sequence, Capture] = {}  # refining prompts between two chunks

    def attach_prefix(self, seq: Sequence) -> int:
        """Start ``seq``'s cache from the longest cached prefix of its prompt; returns the prompt
        tokens it covers, which need no prefill (``max_cached_prefix``: at most all but the
        last, whose logits give the first token; for a refining prompt all but its scored
        last W, whose queries the capture needs)."""
        if self.prefix_cache is None:
            return 0
        most = max_cached_prefix(
            seq.num_prompt_tokens, seq.scores_prompt, self.refiner.config.window
        )
        num_cached, kv = self.prefix_cache.lookup(seq.prompt_ids, most)
        if kv is None:
            return 0
        cache = new_cache(self.loaded.model)
        set_kv(cache, kv)
        self._caches[seq] = cache
        return num_cached

    def prefill(self, seq: Sequence, start: int, end: int) -> SeqOutput:
        """Put prompt positions [start, end) into ``seq``'s cache; after the last chunk, sample
        the first token."""
        model = self.loaded.model
        if seq not in self._caches:
            assert start == 0, "a later chunk continues the sequence's own cache"
            self._caches[seq] = new_cache(model)
        cache = self._caches[seq]
        ids, positions = seq.prompt_ids[start:end], list(range(start, end))
        ratio = seq.request.refine_ratio
        keep_set = None
        if ratio > 0:
            cap = self._captures.pop(seq, None)
            if cap is None:
                cap = self.refiner.start(ratio)
                if start > 0:  # after a cached prefix: its keys are scored from the cache
                    cap.after_prefix(kv_of(cache))
            with cap.recording():
                logits = forward_tokens(model, ids, positions, cache)
            if end < seq.num_prompt_tokens:
                self._captures[seq] = cap  # the next chunk records into it
            else:
                keep_set = cap.keep_set(seq.prompt_ids, ratio)
        else:
            logits = forward_tokens(model, ids, positions, cache)
        self.loaded.platform.synchronize()
        if end < seq.num_prompt_tokens:
            return SeqOutput(seq)
        if self.prefix_cache is not None:
            self.prefix_cache.insert(seq.prompt_ids, kv_of(cache))
        if seq.request.prompt_logprobs is not None:
            seq.prompt_logprobs = prompt_logprobs(
                model, seq.prompt_ids, seq.request.prompt_logprobs
            )
        return _sampled(seq, logits, keep_set)

    def decode(self, seqs: list[Sequence]) -> list[SeqOutput]:
        """One next token for each sequence, in order, from one batched forward."""
        wanted = set(seqs)
        self.batch.remove([s for s in self.batch.seqs if s not in wanted])
        for seq in seqs:
            if seq in self._caches:  # prefilled: it joins the batch
                self.batch.add(seq, self._caches.pop(seq))
        logits = self.batch.forward()  # [B, vocab], rows in self.batch.seqs order
        self.loaded.platform.synchronize()
        by_seq = {seq: row for seq, row in zip(self.batch.seqs, logits, strict=True)}
        return [_sampled(seq, by_seq[seq]) for seq in seqs]

    def warm_up(self) -> None:
        """One tiny prefill and decode, so the first request does not pay for lazy init."""
        cache = new_cache(self.loaded.model)
        forward_tokens(self.loaded.model, [0, 1, 2, 3], [0, 1, 2, 3], cache)
        forward_tokens(self.loaded.model, [4], [4], cache)
        self.loaded.platform.synchronize()

    def release(self, seq: Sequence) -> None:
        """Free ``seq``'s KV, its own cache or its batch row (the other rows are untouched)."""
        self._caches.pop(seq, None)
        self._captures.pop(seq, None)
        self.batch.remove([seq])


def _sampled(seq: Sequence, logits, keep_set: KeepSet | None = None) -> SeqOutput:
    """The next token of ``seq``; a sampling failure is this sequence's error, nobody else's."""
    try:
        token_id = sample_token(logits, seq.request.sampling, index=seq.num_tokens)
        if seq.request.logprobs is not None:  # rides on the token's event (``append_token``)
            seq.next_logprob = token_logprob(logits, token_id, seq.request.logprobs)
    except Exception as err:
        return SeqOutput(seq, error=err)
    return SeqOutput(seq, token_id=token_id, keep_set=keep_set)
