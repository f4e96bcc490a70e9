"""The tuner's cloud-side setting: the prefill chunk that keeps pd streams fed under load.

Why (measured with ``pdd simulate``, docs/tuner.md §5): under load the cloud always has a prompt
to prefill, and the engine's policy (``cloud_server/scheduler.py``) then runs one decode round
per prefill chunk, so each stream gets a token every s(K) + Tchunk, not every τc. With the default
512-token chunk on this CPU that is 2.8-4.1 s against a display interval of 0.4-0.8 s: a pd
answer's display runs dry long before its handoff (m = 3 tokens instead of 20-40) and the
device's first token comes seconds after the last cloud token, a stall that no budget N can
fix (the stalled answers never receive their N + 1 tokens).

The rule: the largest chunk c (at most the longest prompt) whose loaded token interval, a decode
round over K requests plus c prompt tokens at the deepest context they can sit at, stays within
the tightest pacing cap Δmax (the TPOT target) of the buckets that use the cloud:

    s(K) + Tpc_extend(c, Lmax - c) <= min Δmax

Then, loaded or not, a stream never waits past Δmax for its next cloud token: the display keeps
its rhythm up to the handoff (the controller's slack between Δplan and the stall threshold
1.5 Δmax covers the absorb), and a cloud-only stream keeps its TPOT. The largest such chunk:
smaller ones put more decode rounds before each prompt's prefill (later first tokens), and in
the engine more forwards.
"""

from __future__ import annotations

from typing import Any

from common.profiles import CloudProfile


def loaded_token_interval(cloud: CloudProfile, slots: int, chunk: int, longest: int) -> float:
    """Seconds between two tokens of a stream while other prompts prefill: a decode round over
    ``slots`` requests, then one ``chunk`` of a prompt at its deepest position."""
    chunk = min(chunk, longest)
    step = cloud.batch.step_time(slots)
    return step + cloud.prefill.extend_time(chunk, max(longest - chunk, 0))


def recommend_chunk(
    cloud: CloudProfile, slots: int, longest: int, max_interval_s: float
) -> dict[str, Any]:
    """``prefill_chunk_tokens`` for ``pdd serve`` (None when even a 1-token chunk is too slow:
    the loaded decode round alone exceeds Δmax), with the figures behind it."""

    def fits(chunk: int) -> bool:
        return loaded_token_interval(cloud, slots, chunk, longest) <= max_interval_s

    lo, hi = 0, max(longest, 1)
    if fits(hi):
        lo = hi
    while hi - lo > 1:  # the interval grows with c: bisect for the largest that fits
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    chunk = lo or None
    interval = loaded_token_interval(cloud, slots, chunk or 1, longest)
    why = (
        f"a decode round at K={slots} plus a {chunk}-token prefill chunk takes "
        f"{interval * 1e3:.0f} ms <= Δmax {max_interval_s * 1e3:.0f} ms"
        if chunk
        else f"a decode round at K={slots} plus a 1-token chunk takes {interval * 1e3:.0f} ms "
        f"> Δmax {max_interval_s * 1e3:.0f} ms: streams stall under load at any chunk size"
    )
    return {
        "prefill_chunk_tokens": chunk,
        "slots": slots,
        "loaded_token_interval_s": interval,
        "max_interval_s": max_interval_s,
        "reason": why,
    }
