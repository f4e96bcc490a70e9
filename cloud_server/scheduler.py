"""The scheduling policy: admission and what each step runs. Pure: no threads, no model, no clock.

One policy, two drivers: the engine (``engine.py``, under its lock, one real step at a time) and
the simulated cloud (``benchmarks/planner/sim_cloud.py``, in simulated time), so the simulator
takes exactly the engine's decisions. A job is anything with the attributes of ``Job``: the
engine's ``Sequence``, or the simulator's own small record.

Each step is either one prefill (new requests first, so TTFT stays low) or one decode round over
every running job. With chunked prefill (``prefill_chunk_tokens``), while any job is decoding at
most that many prompt tokens (over all jobs) are prefilled between two decode rounds: a long prompt
then pauses the others' streams for one chunk, not for its whole prefill (measured with
``benchmarks/studies/chunked_prefill.py``, 2 threads: a 2k-token prompt paused 4 streams for 3.7 s
whole, 1.4 s in 512-token chunks). With nobody decoding, the whole prompt goes in one forward. A
chunk is never a sliver: with less than half a chunk of budget left, the decode round runs first.
A refining prompt is chunked like any other (its attention scores are recorded chunk by chunk).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Protocol

from common.errors import Overloaded

from .config import EngineConfig

REFINE_WINDOW = 32  # W: the last prompt positions whose attention refinement scores


def max_cached_prefix(num_prompt: int, refines: bool, window: int = REFINE_WINDOW) -> int:
    """Leading prompt tokens a request may take from the prefix cache: all but the last (its
    logits give the first token); a refining prompt all but its last ``window``, the queries
    whose attention is scored (the cached keys serve as keys). The engine and the simulator
    both ask this."""
    return max(num_prompt - (window if refines else 1), 0)


class SequenceStatus(Enum):
    QUEUED = auto()  # accepted, waiting for a free slot (only when max_queue > 0)
    WAITING = auto()  # holds a slot, prefill not (fully) run yet
    RUNNING = auto()  # prefilled, decoding
    FINISHED = auto()


class Job(Protocol):
    """What the policy reads (the first two) and writes (the rest) on each job."""

    @property
    def key(self) -> Hashable: ...
    @property
    def num_prompt_tokens(self) -> int: ...

    status: SequenceStatus
    num_prefilled: int  # prompt tokens scheduled into the KV cache so far
    admitted_s: float | None  # when it got a slot


class StepKind(str, Enum):
    IDLE = "idle"
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass
class Step:
    kind: StepKind
    seqs: list = field(default_factory=list)  # the jobs this step runs
    prefill_range: tuple[int, int] = (0, 0)  # PREFILL: the prompt positions [start, end) to run


class Scheduler:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.queued: deque = deque()  # no slot yet
        self.waiting: deque = deque()  # slot held, prefill pending
        self.running: list = []  # slot held, decoding
        self._by_key: dict[Hashable, Job] = {}
        self._prefilled_since_decode = 0  # prompt tokens scheduled since the last decode round

    @property
    def num_active(self) -> int:
        return len(self._by_key)

    @property
    def num_slots_used(self) -> int:
        return len(self.waiting) + len(self.running)

    def find(self, key: Hashable) -> Job | None:
        return self._by_key.get(key)

    def has_work(self) -> bool:
        return bool(self._by_key)

    def active(self) -> list:
        return [*self.queued, *self.waiting, *self.running]

    def add(self, job: Job, now: float) -> None:
        """Admit ``job`` or raise ``Overloaded`` at once; never queue past ``max_queue``."""
        assert job.key not in self._by_key, "caller checks for duplicate keys"
        if self.num_slots_used < self.config.max_concurrent_requests and not self.queued:
            self._admit(job, now)
        elif len(self.queued) < self.config.max_queue:
            self.queued.append(job)
        else:
            raise Overloaded(
                f"all {self.config.max_concurrent_requests} request slots are busy; "
                f"retry after {self.config.retry_after_s:g} s or run the answer on the device",
                retry_after_s=self.config.retry_after_s,
            )
        self._by_key[job.key] = job

    def schedule(self, now: float) -> Step:
        """The next step. A PREFILL step's range counts as scheduled (``num_prefilled``)."""
        while self.queued and self.num_slots_used < self.config.max_concurrent_requests:
            self._admit(self.queued.popleft(), now)
        while self.waiting and self.waiting[0].num_prefilled >= self.waiting[0].num_prompt_tokens:
            job = self.waiting.popleft()  # its last chunk ran: it decodes from now on
            job.status = SequenceStatus.RUNNING
            self.running.append(job)
        if self.waiting:
            job = self.waiting[0]
            num = self._prefill_budget(job)
            if num > 0:
                start = job.num_prefilled
                job.num_prefilled += num
                self._prefilled_since_decode += num
                return Step(StepKind.PREFILL, [job], (start, start + num))
        if self.running:
            self._prefilled_since_decode = 0
            return Step(StepKind.DECODE, list(self.running))
        return Step(StepKind.IDLE)

    @property
    def is_prefill_pending(self) -> bool:
        """A prefill waits: the next decode round is followed by a prefill, not another round."""
        return bool(self.waiting)

    def finish(self, job: Job) -> None:
        """Release ``job``'s slot; its next ``schedule`` may admit a queued job."""
        assert self._by_key.pop(job.key, None) is job, "finish each job exactly once"
        if job.status is SequenceStatus.RUNNING:
            self.running.remove(job)
        elif job.status is SequenceStatus.WAITING:
            self.waiting.remove(job)
        else:
            self.queued.remove(job)
        job.status = SequenceStatus.FINISHED

    def _prefill_budget(self, job: Job) -> int:
        """Prompt tokens of ``job`` to prefill now; 0: a decode round is due first."""
        left = job.num_prompt_tokens - job.num_prefilled
        chunk = self.config.prefill_chunk_tokens
        if not self.running or chunk == 0:
            return left  # nobody is waiting on a decode round (or no chunking)
        budget = chunk - self._prefilled_since_decode
        if left <= budget:
            return left
        return budget if budget >= chunk // 2 else 0  # no sliver chunks: a decode round first

    def _admit(self, job: Job, now: float) -> None:
        job.status = SequenceStatus.WAITING
        job.admitted_s = now
        self.waiting.append(job)
