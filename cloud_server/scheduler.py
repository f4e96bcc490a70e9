"""Admission and step planning. Pure: no threads, no model; the engine calls it under its lock.

Each step is either one prefill (new requests first, so TTFT stays low) or one decode round over
every running sequence. With chunked prefill (``prefill_chunk_tokens``), while any request is
decoding at most that many prompt tokens are prefilled between two decode rounds: a long prompt
then pauses the others' streams for one chunk, not for its whole prefill (measured with
``benchmarks/studies/chunked_prefill.py``, 2 threads: a 2k-token prompt paused 4 streams for 3.7 s whole,
1.4 s in 512-token chunks). With nobody decoding, the whole prompt goes in one forward. Requests asked to stop (handoff, cancel, shutdown) leave at the
next step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from common.errors import Overloaded

from .config import EngineConfig
from .sequence import RequestKey, Sequence, SequenceStatus


class StepKind(str, Enum):
    IDLE = "idle"
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass
class Step:
    kind: StepKind
    seqs: list[Sequence] = field(default_factory=list)
    stopped: list[Sequence] = field(default_factory=list)  # to finish with their stop_reason
    prefill_range: tuple[int, int] = (0, 0)  # PREFILL: the prompt positions [start, end) to run


class Scheduler:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.queued: deque[Sequence] = deque()  # no slot yet
        self.waiting: deque[Sequence] = deque()  # slot held, prefill pending
        self.running: list[Sequence] = []  # slot held, decoding
        self._by_key: dict[RequestKey, Sequence] = {}
        self._prefilled_since_decode = 0  # prompt tokens scheduled since the last decode round

    @property
    def num_active(self) -> int:
        return len(self._by_key)

    @property
    def num_slots_used(self) -> int:
        return len(self.waiting) + len(self.running)

    def find(self, key: RequestKey) -> Sequence | None:
        return self._by_key.get(key)

    def has_work(self) -> bool:
        return bool(self._by_key)

    def add(self, seq: Sequence, now: float) -> None:
        """Admit ``seq`` or raise ``Overloaded`` at once; never queue past ``max_queue``."""
        assert seq.key not in self._by_key, "caller checks for duplicate ids"
        if self.num_slots_used < self.config.max_concurrent_requests and not self.queued:
            self._admit(seq, now)
        elif len(self.queued) < self.config.max_queue:
            self.queued.append(seq)
        else:
            raise Overloaded(
                f"all {self.config.max_concurrent_requests} request slots are busy; "
                f"retry after {self.config.retry_after_s:g} s or run the answer on the device",
                retry_after_s=self.config.retry_after_s,
            )
        self._by_key[seq.key] = seq

    def schedule(self, now: float) -> Step:
        stopped = self._take_stopped()
        while self.queued and self.num_slots_used < self.config.max_concurrent_requests:
            self._admit(self.queued.popleft(), now)
        while self.waiting and self.waiting[0].is_prefilled:  # its last chunk ran: it decodes
            seq = self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
        if self.waiting:
            seq = self.waiting[0]
            num = self._prefill_budget(seq)
            if num > 0:
                start = seq.num_prefilled
                seq.num_prefilled += num
                self._prefilled_since_decode += num
                return Step(StepKind.PREFILL, [seq], stopped, (start, start + num))
        if self.running:
            self._prefilled_since_decode = 0
            return Step(StepKind.DECODE, list(self.running), stopped)
        return Step(StepKind.IDLE, [], stopped)

    def _prefill_budget(self, seq: Sequence) -> int:
        """Prompt tokens of ``seq`` to prefill now; 0: a decode round is due first."""
        left = seq.num_prompt_tokens - seq.num_prefilled
        chunk = self.config.prefill_chunk_tokens
        if not self.running or chunk == 0:
            return left  # nobody is waiting on a decode round (or no chunking)
        budget = chunk - self._prefilled_since_decode
        if seq.needs_whole_prompt:
            return left if self._prefilled_since_decode == 0 else 0
        if left <= budget:
            return left
        return budget if budget >= chunk // 2 else 0  # no sliver chunks: a decode round first

    def finish(self, seq: Sequence) -> None:
        """Release ``seq``'s slot (idempotent)."""
        if self._by_key.pop(seq.key, None) is None:
            return
        for queue in (self.queued, self.waiting):
            if seq in queue:
                queue.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
        seq.status = SequenceStatus.FINISHED

    def _admit(self, seq: Sequence, now: float) -> None:
        seq.status = SequenceStatus.WAITING
        seq.admitted_s = now
        self.waiting.append(seq)

    def _take_stopped(self) -> list[Sequence]:
        stopped = [s for s in self._by_key.values() if s.stop_reason is not None]
        for seq in stopped:
            self.finish(seq)
        return stopped
