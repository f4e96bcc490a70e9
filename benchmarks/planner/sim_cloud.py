"""The simulated cloud: the engine's own scheduling policy driven in simulated time.

Every step is decided by ``cloud_server.scheduler.Scheduler``, the object the engine drives, with
the same configuration (K slots, FIFO queue, ``prefill_chunk_tokens``), so the simulator takes
exactly the engine's decisions (a test checks it step by step). Only the cost of a step comes
from the profile: a prefill forward of n tokens after c cached ones takes ``extend_time(n, c)``,
a decode round over B requests s(B) = e0 + e1·B. Requests that arrive during a step join before
its results, as in the engine.

While the policy would repeat the same decode round (no prefill pending), the rounds up to the
next arrival or the next request's last token are taken at once, so 100,000 requests take a few
seconds. A request's cloud busy seconds are its prefill forwards plus its share s(B)/B of each
decode round it was in.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from cloud_server.config import EngineConfig
from cloud_server.scheduler import Scheduler, SequenceStatus, StepKind
from common.profiles import CloudProfile


@dataclass(frozen=True)
class CloudRun:
    first_token_at: np.ndarray  # cloud time the first token is out (end of prefill)
    decode_end_at: np.ndarray  # cloud time the last token is out
    busy_s: np.ndarray  # busy seconds each request cost the cloud
    utilisation: float  # fraction of the span the engine was busy
    span_s: float


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
    num_tokens: int  # tokens it gets, first included
    needs_whole_prompt: bool = False
    status: SequenceStatus = SequenceStatus.QUEUED
    num_prefilled: int = 0
    admitted_s: float | None = None
    share_at_start: float = 0.0  # the decode-share counter when it started decoding

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
    needs_whole_prompt: np.ndarray | None = None,
    num_cached: np.ndarray | None = None,
    trace: list[SimStep] | None = None,
) -> CloudRun:
    """``num_tokens[i]``: tokens request i gets (first included); 0 means it never uses the cloud.

    ``needs_whole_prompt[i]``: request i refines its prompt, so it is never chunked.
    ``num_cached[i]``: leading prompt tokens of request i in the cloud's prefix cache (at most
    all but one): its prefill starts after them, as in the engine. ``trace`` gets every step
    taken, in order.
    """
    n = len(arrivals)
    first, end, busy = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n)
    whole = np.zeros(n, bool) if needs_whole_prompt is None else needs_whole_prompt
    config = EngineConfig(
        max_concurrent_requests=slots, max_queue=n, prefill_chunk_tokens=chunk_tokens
    )
    policy = Scheduler(config)
    order = [int(i) for i in np.argsort(arrivals, kind="stable") if num_tokens[i] > 0]
    cached = np.zeros(n, int) if num_cached is None else np.minimum(num_cached, prompt_lens - 1)
    cached[whole] = 0  # a refinement prompt is prefilled whole, for its attention scores
    jobs = {i: SimJob(i, int(prompt_lens[i]), int(num_tokens[i]), bool(whole[i])) for i in order}
    for i, job in jobs.items():
        job.num_prefilled = int(cached[i])
    decoding: list[tuple[int, int]] = []  # (decode rounds done when its last token is out, i)
    t = float(arrivals[order[0]]) if order else 0.0
    rounds = 0  # decode rounds run so far
    share = busy_time = 0.0  # a decoding request's busy-seconds counter; engine busy seconds
    nxt = 0

    def arrive(until: float) -> None:
        nonlocal nxt
        while nxt < len(order) and arrivals[order[nxt]] <= until:
            policy.add(jobs[order[nxt]], float(arrivals[order[nxt]]))
            nxt += 1

    while nxt < len(order) or policy.has_work():
        arrive(t)
        step = policy.schedule(t)
        if step.kind is StepKind.IDLE:
            t = float(arrivals[order[nxt]])
            continue
        if step.kind is StepKind.PREFILL:
            job, (start, stop) = step.seqs[0], step.prefill_range
            dt = cloud.prefill.extend_time(stop - start, start)
            if trace is not None:
                trace.append(SimStep(t, step.kind, (job.index,), step.prefill_range))
            arrive(t + dt)
            t += dt
            busy[job.index] += dt
            busy_time += dt
            if stop == job.num_prompt_tokens:
                first[job.index] = t
                if job.num_tokens == 1:
                    end[job.index] = t
                    policy.finish(job)
                else:
                    job.share_at_start = share
                    heapq.heappush(decoding, (rounds + job.num_tokens - 1, job.index))
            continue
        num = len(step.seqs)
        step_s = cloud.batch.e0 + cloud.batch.e1 * num
        k = _rounds_to_take(policy, decoding[0][0] - rounds, t, step_s, arrivals, order, nxt)
        if trace is not None:
            ids = tuple(job.index for job in step.seqs)
            trace += [SimStep(t + j * step_s, step.kind, ids) for j in range(k)]
        arrive(t + k * step_s)
        t += k * step_s
        rounds += k
        share += k * step_s / num
        busy_time += k * step_s
        while decoding and decoding[0][0] <= rounds:
            job = jobs[heapq.heappop(decoding)[1]]
            end[job.index] = t
            busy[job.index] += share - job.share_at_start
            policy.finish(job)
    span = float(np.nanmax(end) - arrivals.min()) if np.isfinite(end).any() else 0.0
    return CloudRun(first, end, busy, busy_time / span if span > 0 else 0.0, span)


def _rounds_to_take(
    policy: Scheduler,
    to_next_end: int,
    t: float,
    step_s: float,
    arrivals: np.ndarray,
    order: list[int],
    nxt: int,
) -> int:
    """Decode rounds the policy would run back to back from ``t``: up to the next request's last
    token or the round during which the next request arrives; one if a prefill is pending."""
    if policy.is_prefill_pending:
        return 1
    if nxt < len(order):
        to_arrival = max(1, math.ceil((arrivals[order[nxt]] - t) / step_s - 1e-9))
        return min(to_next_end, to_arrival)
    return to_next_end
