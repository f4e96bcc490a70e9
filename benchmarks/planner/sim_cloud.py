"""The simulated cloud: one engine with K slots, serial prefill, batched decode.

Event-driven (heapq), a handful of events per request (arrival, prefill chunks, decode end), so
100,000 requests take about a second. It mirrors ``cloud_server.scheduler``:
- at most K requests admitted (prefilling or decoding); the rest wait in FIFO order;
- one prefill at a time, prefill first; decode pauses while a prefill forward runs;
- chunked prefill (``chunk_tokens`` > 0): while requests decode, a prompt goes in chunks of that
  many tokens (each ``extend_time`` from the profile) with one decode step between two chunks;
  with nobody decoding the rest goes in one forward;
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
    chunk_tokens: int = 0,
) -> CloudRun:
    """``num_tokens[i]``: tokens request i gets (first included); 0 means it never uses the cloud."""
    n = len(arrivals)
    first = np.full(n, np.nan)
    end = np.full(n, np.nan)
    busy = np.zeros(n)
    cost = cloud.prefill.extend_time  # (tokens, context) -> seconds of one prefill forward
    e0, e1 = cloud.batch.e0, cloud.batch.e1
    order = [i for i in np.argsort(arrivals, kind="stable") if num_tokens[i] > 0]
    waiting: deque[int] = deque()
    to_prefill: deque[int] = deque()
    decoding: list[tuple[float, int]] = []  # (V at which its last token is out, request)
    share_at_start: dict[int, float] = {}
    t = v = share = busy_time = 0.0
    admitted, nxt = 0, 0
    prefilling = -1  # the request in prefill, or -1
    done = chunk = 0  # its prompt tokens prefilled, and in the forward running now
    in_forward = False  # a prefill forward runs (decode paused); else a decode step between
    phase_end = np.inf  # end of that forward, or of the decode step between two chunks

    def start_forward() -> None:
        nonlocal chunk, in_forward, phase_end
        left = int(prompt_lens[prefilling]) - done
        chunk = min(chunk_tokens, left) if chunk_tokens > 0 and decoding else left
        in_forward, phase_end = True, t + cost(chunk, done)

    while nxt < len(order) or prefilling >= 0 or to_prefill or decoding:
        if prefilling < 0 and to_prefill:
            prefilling, done = to_prefill.popleft(), 0
            start_forward()
        b = len(decoding)
        step = e0 + e1 * b
        t_arr = arrivals[order[nxt]] if nxt < len(order) else np.inf
        t_dec = t + (decoding[0][0] - v) * step if decoding and not in_forward else np.inf
        t_next = min(t_arr, phase_end, t_dec)
        dt = t_next - t
        if prefilling >= 0 or b:
            busy_time += dt
        if in_forward:
            busy[prefilling] += dt
        elif b:
            v += dt / step
            share += dt / b
        t = t_next
        if t_next == phase_end and in_forward:
            done += chunk
            if done < prompt_lens[prefilling]:  # more chunks: one decode step first
                if decoding:
                    in_forward, phase_end = False, t + step
                else:
                    start_forward()
                continue
            r, prefilling, in_forward, phase_end = prefilling, -1, False, np.inf
            first[r] = t
            if num_tokens[r] > 1:
                heapq.heappush(decoding, (v + num_tokens[r] - 1, r))
                share_at_start[r] = share
            else:
                end[r] = t
                admitted -= 1
        elif t_next == phase_end:  # the decode step between two chunks is over
            start_forward()
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
