"""The simulated cloud: one engine with K slots, serial prefill, batched decode.

Event-driven (heapq), one event per arrival, prefill end and decode end, so 100,000 requests
take about a second. Model (nano-vllm-like, prefill first):
- at most K requests admitted (prefilling or decoding); the rest wait in FIFO order;
- one prefill at a time, Tpc(L) from the profile; decode pauses while it runs;
- the B decoding requests each advance one token per step of s(B) = e0 + e1·B seconds, so a
  token counter V(t) with dV/dt = 1/s(B) tells when each request's last token is out.
A request's cloud busy seconds are its prefill plus its share s(B)/B of each step it was in.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from common.timing_model import CloudProfile


@dataclass(frozen=True)
class CloudRun:
    first_token_at: np.ndarray  # cloud time the first token is out (end of prefill)
    decode_end_at: np.ndarray  # cloud time the last token is out
    busy_s: np.ndarray  # busy seconds each request cost the cloud
    utilisation: float  # fraction of the span the engine was busy
    span_s: float


def simulate_cloud(
    arrivals: np.ndarray,
    prompt_lens: np.ndarray,
    num_tokens: np.ndarray,
    cloud: CloudProfile,
    slots: int,
) -> CloudRun:
    """``num_tokens[i]``: tokens request i gets (first included); 0 means it never uses the cloud."""
    n = len(arrivals)
    first = np.full(n, np.nan)
    end = np.full(n, np.nan)
    busy = np.zeros(n)
    prefill = [cloud.prefill.time(int(x)) for x in prompt_lens]
    e0, e1 = cloud.batch.e0, cloud.batch.e1
    order = [i for i in np.argsort(arrivals, kind="stable") if num_tokens[i] > 0]
    waiting: deque[int] = deque()
    to_prefill: deque[int] = deque()
    decoding: list[tuple[float, int]] = []  # (V at which its last token is out, request)
    share_at_start: dict[int, float] = {}
    t = v = share = busy_time = 0.0
    admitted, nxt = 0, 0
    prefill_end, prefilling = np.inf, -1
    while nxt < len(order) or prefilling >= 0 or to_prefill or decoding:
        if prefilling < 0 and to_prefill:
            prefilling = to_prefill.popleft()
            prefill_end = t + prefill[prefilling]
        b = len(decoding)
        step = e0 + e1 * b
        t_arr = arrivals[order[nxt]] if nxt < len(order) else np.inf
        t_dec = t + (decoding[0][0] - v) * step if decoding and prefilling < 0 else np.inf
        t_next = min(t_arr, prefill_end, t_dec)
        dt = t_next - t
        if prefilling >= 0 or b:
            busy_time += dt
        if prefilling < 0 and b:
            v += dt / step
            share += dt / b
        t = t_next
        if t_next == prefill_end:
            r, prefilling, prefill_end = prefilling, -1, np.inf
            first[r] = t
            busy[r] += prefill[r]
            if num_tokens[r] > 1:
                heapq.heappush(decoding, (v + num_tokens[r] - 1, r))
                share_at_start[r] = share
            else:
                end[r] = t
                admitted -= 1
        elif t_next == t_dec:
            _, r = heapq.heappop(decoding)
            end[r] = t
            busy[r] += share - share_at_start.pop(r)
            admitted -= 1
        else:
            waiting.append(order[nxt])
            nxt += 1
        while waiting and admitted < slots:
            to_prefill.append(waiting.popleft())
            admitted += 1
    span = float(np.nanmax(end) - arrivals.min()) if np.isfinite(end).any() else 0.0
    return CloudRun(first, end, busy, busy_time / span if span > 0 else 0.0, span)
