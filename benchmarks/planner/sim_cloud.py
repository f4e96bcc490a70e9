"""The simulated cloud: the engine's own scheduling policy driven in simulated time.

Every step is decided by ``cloud_server.scheduler.Scheduler``, the object the engine drives, with
the same configuration (K slots, FIFO queue, ``prefill_chunk_tokens``), so the simulator takes
exactly the engine's decisions (a test checks it step by step). Only the cost of a step comes
from the profile: a prefill forward of n tokens after c cached ones takes ``extend_time(n, c)``,
a decode round over B requests s(B) = e0 + e1·B. Requests that arrive during a step join before
its results, as in the engine.

While the policy would repeat the same decode round (no prefill pending), the rounds up to the
next arrival, the next request's last token or the next handoff are taken at once (a decode
group), so 100,000 requests take a few seconds. Two costs per request:
- **engine share** (``busy_s``): its prefill forwards plus its share s(B)/B of each decode round
  it was in: the engine time it costs (the fleet study's cloud cost);
- **slot-holding time** (``slot_s``): from the moment the policy gave it a slot (the engine's
  ``admitted_s``) to its release: what the engine reports as ``usage.busy_s`` ("cloud busy" in
  the README glossary). It includes the rounds shared with others and the pauses for their
  prefills.

Its largest gap between two tokens (``max_gap_s``) counts those pauses: each decode group keeps
its start, step time and the end of the decode round before it; a running request is in every
decode round, so its gaps are its first decode round after its first token, and the first round
of each later group (``np.maximum.reduceat`` over its range of groups).

Two hooks make the cloud's answers depend on its own timing: ``stop_at`` (a pd device's handoff
reaches the cloud; the engine ends the request after the step in flight) and ``next_arrival``
(closed loop: a device sends its next request when the last one ended).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from cloud_server.config import EngineConfig
from cloud_server.scheduler import Scheduler, SequenceStatus, StepKind, max_cached_prefix
from common.profiles import CloudProfile

StopAt = Callable[[int, float, float], float]  # (i, arrived at, first token at) -> stop time
NextArrival = Callable[[int, float], "list[tuple[int, float]]"]  # (i, ended at) -> arrivals


@dataclass(frozen=True)
class DecodeGroups:
    """Decode rounds taken back to back with one batch: start, step time, rounds, and the end
    of the decode round before the group (-inf for the first)."""

    start: np.ndarray
    step: np.ndarray
    rounds: np.ndarray
    prev_end: np.ndarray


@dataclass(frozen=True)
class CloudRun:
    first_token_at: np.ndarray  # cloud time the first token is out (end of prefill)
    decode_end_at: np.ndarray  # cloud time the last token is out (the request ends)
    busy_s: np.ndarray  # engine share: engine seconds each request cost the cloud
    utilisation: float  # fraction of the span the engine was busy
    span_s: float
    slot_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # slot-holding seconds
    max_gap_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 0: one token only
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # decoded, first incl.
    arrival_at: np.ndarray = field(default_factory=lambda: np.zeros(0))  # at the cloud
    groups: DecodeGroups | None = None
    group_range: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), int))  # [lo, hi)

    def token_times(self, i: int) -> np.ndarray:
        """Cloud time each token of request ``i`` is out, the first included."""
        lo, hi = self.group_range[i]
        if self.groups is None or hi <= lo:
            return np.array([self.first_token_at[i]])[: self.tokens[i]]
        g = self.groups
        k = g.rounds[lo:hi]
        offset = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k) + 1  # 1..k per group
        rest = np.repeat(g.start[lo:hi], k) + np.repeat(g.step[lo:hi], k) * offset
        return np.concatenate([[self.first_token_at[i]], rest])


@dataclass(frozen=True)
class SimStep:
    """One engine step as the simulator took it (``trace``): start time, kind, requests."""

    start_s: float
    kind: StepKind
    requests: tuple[int, ...]
    prefill_range: tuple[int, int] = (0, 0)


@dataclass(eq=False)
class SimJob:
    """The scheduler's view of one simulated request (``cloud_server.scheduler.Job``)."""

    index: int
    num_prompt_tokens: int
    num_tokens: int  # tokens it may get (first included): its cap
    status: SequenceStatus = SequenceStatus.QUEUED
    num_prefilled: int = 0
    admitted_s: float | None = None
    share_at_start: float = 0.0  # the decode-share counter when it started decoding
    rounds_at_start: int = 0  # decode rounds run when it started decoding
    group_at_start: int = 0  # decode groups taken when it started decoding

    @property
    def key(self) -> Hashable:
        return self.index


def simulate_cloud(
    arrivals: np.ndarray,
    prompt_lens: np.ndarray,
    num_tokens: np.ndarray,
    cloud: CloudProfile,
    slots: int,
    chunk_tokens: int = 0,
    scores_prompt: np.ndarray | None = None,
    num_cached: np.ndarray | None = None,
    trace: list[SimStep] | None = None,
    stop_at: StopAt | None = None,
    next_arrival: NextArrival | None = None,
) -> CloudRun:
    """``num_tokens[i]``: tokens request i may get (first included); 0: it never uses the cloud.

    ``arrivals[i]``: when request i reaches the cloud; ``inf`` for one that ``next_arrival``
    releases later. ``scores_prompt[i]``: it refines its prompt, so at most all but its scored
    last W positions come from the prefix cache (``scheduler.max_cached_prefix``, as in the engine).
    ``num_cached[i]``: leading prompt tokens in the cloud's prefix cache (at most all but one):
    its prefill starts after them, as in the engine. ``stop_at(i, arrived, first)``: when a stop
    (a handoff) reaches the cloud for request i, asked at its first token (inf: never); the
    request ends after the step in flight then. ``next_arrival(i, t)``: requests that arrive
    because request i ended at ``t``, as (index, cloud arrival). ``trace`` gets every step.
    """
    sim = _CloudSim(arrivals, prompt_lens, num_tokens, cloud, slots, chunk_tokens,
                    scores_prompt, num_cached, trace, stop_at, next_arrival)  # fmt: skip
    return sim.run()


class _CloudSim:
    def __init__(self, arrivals, prompt_lens, num_tokens, cloud, slots, chunk_tokens, scores,
                 num_cached, trace, stop_at, next_arrival) -> None:  # fmt: skip
        n = len(arrivals)
        self.n, self.cloud, self.trace = n, cloud, trace
        self.stop_hook, self.next_hook = stop_at, next_arrival
        self.arrival = np.asarray(arrivals, float).copy()
        self.first, self.end = np.full(n, np.nan), np.full(n, np.nan)
        self.busy, self.slot = np.zeros(n), np.zeros(n)
        self.tokens, self.group_range = np.zeros(n, int), np.zeros((n, 2), int)
        scores = np.zeros(n, bool) if scores is None else np.asarray(scores, bool)
        config = EngineConfig(max_concurrent_requests=slots, max_queue=max(n, 1),
                              prefill_chunk_tokens=chunk_tokens)  # fmt: skip
        self.policy = Scheduler(config)
        cached = np.zeros(n, int) if num_cached is None else np.minimum(num_cached, prompt_lens - 1)
        for i in np.flatnonzero(scores):  # a refining prompt's scored last W are prefilled
            most = max_cached_prefix(int(prompt_lens[i]), True)
            cached[i] = min(int(cached[i]), most)
        self.jobs = [SimJob(i, int(prompt_lens[i]), int(num_tokens[i]),
                            num_prefilled=int(cached[i])) for i in range(n)]  # fmt: skip
        order = np.argsort(self.arrival, kind="stable")
        self.pending = [(self.arrival[i], k, int(i)) for k, i in enumerate(order)
                        if num_tokens[i] > 0 and np.isfinite(self.arrival[i])]  # fmt: skip
        self.seq = n  # tie-break of later arrivals, after every initial one
        self.decoding: list[tuple[int, int]] = []  # (rounds done at its last token, i)
        self.stops: list[tuple[float, int]] = []  # (stop reaches the cloud, i)
        self.g_start, self.g_step, self.g_rounds, self.g_prev = [], [], [], []
        self.t = self.pending[0][0] if self.pending else 0.0
        self.rounds, self.share, self.busy_time = 0, 0.0, 0.0
        self.last_round_end = -math.inf

    def run(self) -> CloudRun:
        policy = self.policy
        while self.pending or policy.has_work():
            self._arrive(self.t)
            self._end_stopped()
            step = policy.schedule(self.t)
            if step.kind is StepKind.IDLE:  # nothing active (a stop may have ended the last)
                if not self.pending:
                    break
                self.t = max(self.t, self.pending[0][0])
            elif step.kind is StepKind.PREFILL:
                self._prefill(step.seqs[0], *step.prefill_range)
            else:
                self._decode(step.seqs)
        return self._result()

    # ---- events ----------------------------------------------------------------------------

    def _arrive(self, until: float) -> None:
        while self.pending and self.pending[0][0] <= until:
            at, _, i = heapq.heappop(self.pending)
            self.policy.add(self.jobs[i], float(at))

    def _end(self, job: SimJob) -> None:
        i = job.index
        self.end[i] = self.t
        self.slot[i] = self.t - job.admitted_s
        if job.status is SequenceStatus.RUNNING:
            self.busy[i] += self.share - job.share_at_start
            self.tokens[i] = 1 + self.rounds - job.rounds_at_start
            self.group_range[i] = (job.group_at_start, len(self.g_start))
        self.policy.finish(job)
        if self.next_hook is not None:
            for j, at in self.next_hook(i, self.t):
                self.arrival[j] = at
                heapq.heappush(self.pending, (at, self.seq, j))
                self.seq += 1

    def _end_stopped(self) -> None:
        """Jobs whose stop reached the cloud by now end before the next step (engine:
        ``_schedule`` first ends the requests asked to stop)."""
        while self.stops and self.stops[0][0] <= self.t:
            job = self.jobs[heapq.heappop(self.stops)[1]]
            if job.status is not SequenceStatus.FINISHED:
                self._end(job)

    def _prefill(self, job: SimJob, start: int, stop: int) -> None:
        dt = self.cloud.prefill.extend_time(stop - start, start)
        if self.trace is not None:
            self.trace.append(SimStep(self.t, StepKind.PREFILL, (job.index,), (start, stop)))
        self._arrive(self.t + dt)
        self.t += dt
        self.busy[job.index] += dt
        self.busy_time += dt
        if stop < job.num_prompt_tokens:
            return
        i = job.index
        self.first[i], self.tokens[i] = self.t, 1
        if job.num_tokens == 1:
            self._end(job)
            return
        job.share_at_start, job.rounds_at_start = self.share, self.rounds
        job.group_at_start = len(self.g_start)
        heapq.heappush(self.decoding, (self.rounds + job.num_tokens - 1, i))
        if self.stop_hook is not None:
            at = self.stop_hook(i, float(self.arrival[i]), self.t)
            if math.isfinite(at):
                heapq.heappush(self.stops, (at, i))

    def _decode(self, seqs: list) -> None:
        num = len(seqs)
        step_s = self.cloud.batch.step_time(num)
        k = self._rounds_to_take(step_s)
        if self.trace is not None:
            ids = tuple(job.index for job in seqs)
            self.trace += [SimStep(self.t + j * step_s, StepKind.DECODE, ids) for j in range(k)]
        self.g_start.append(self.t)
        self.g_step.append(step_s)
        self.g_rounds.append(k)
        self.g_prev.append(self.last_round_end)
        self._arrive(self.t + k * step_s)
        self.t += k * step_s
        self.last_round_end = self.t
        self.rounds += k
        self.share += k * step_s / num
        self.busy_time += k * step_s
        while self.decoding and self.decoding[0][0] <= self.rounds:
            job = self.jobs[heapq.heappop(self.decoding)[1]]
            if job.status is not SequenceStatus.FINISHED:
                self._end(job)
        self._end_stopped()  # a stop during the last round: that round was its last

    def _rounds_to_take(self, step_s: float) -> int:
        """Decode rounds the policy runs back to back from now: up to the next request's last
        token, the round during which the next request arrives or the next stop reaches the
        cloud; one if a prefill is pending."""
        if self.policy.is_prefill_pending:
            return 1
        while self.decoding and self.jobs[self.decoding[0][1]].status is SequenceStatus.FINISHED:
            heapq.heappop(self.decoding)  # ended by a stop
        k = self.decoding[0][0] - self.rounds
        for at in (self.pending[0][0] if self.pending else math.inf,
                   self.stops[0][0] if self.stops else math.inf):  # fmt: skip
            if math.isfinite(at):
                k = min(k, max(1, math.ceil((at - self.t) / step_s - 1e-9)))
        return k

    # ---- results ---------------------------------------------------------------------------

    def _result(self) -> CloudRun:
        ended = np.isfinite(self.end)
        start = float(np.min(self.arrival[ended])) if ended.any() else 0.0
        span = float(np.max(self.end[ended]) - start) if ended.any() else 0.0
        groups = DecodeGroups(np.array(self.g_start, float), np.array(self.g_step, float),
                              np.array(self.g_rounds, int), np.array(self.g_prev, float))  # fmt: skip
        return CloudRun(
            self.first, self.end, self.busy, self.busy_time / span if span > 0 else 0.0, span,
            slot_s=self.slot, max_gap_s=max_gaps(groups, self.group_range, self.first),
            tokens=self.tokens, arrival_at=self.arrival, groups=groups,
            group_range=self.group_range,
        )  # fmt: skip


def max_gaps(groups: DecodeGroups, group_range: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each request's largest gap between two of its tokens (0 with a single token)."""
    n = len(group_range)
    out = np.zeros(n)
    lo, hi = group_range[:, 0], group_range[:, 1]
    has = hi > lo
    if not has.any():
        return out
    idx = np.flatnonzero(has)
    out[idx] = groups.start[lo[idx]] + groups.step[lo[idx]] - first[idx]  # its first round
    later = groups.start + groups.step - groups.prev_end  # a group's first round, after a pause
    more = idx[hi[idx] - lo[idx] > 1]
    if len(more):
        bounds = np.column_stack([lo[more] + 1, hi[more]]).ravel()
        padded = np.append(later, -np.inf)  # reduceat needs every index < len
        out[more] = np.maximum(out[more], np.maximum.reduceat(padded, bounds)[::2])
    return out
