"""Speed controller: when to show the next buffered token.

A pure policy object (no I/O, no clock of its own: every call gets ``now``), so it is unit-tested
with a fake clock and reused as is by the fleet simulator.

The display shows one queue: the cloud's tokens, then (after the handoff) the device's own. The
device hands off as soon as its prompt prefill is done, at m = the cloud tokens received by then,
which it absorbs in one forward (see ``answer.py`` for why: absorbing only *shown* tokens made
the device chase the display). Until its first own token is ready the controller stretches the
cloud tokens it has, so the stream does not stall at the handoff:

    Δ = clamp((T̂own - now) / tokens_left, Δmin, Δmax)
    T̂own = now + (prompt tokens left) / r̂ + absorb(received) + τ̂d
    tokens_left = buffered + the due cloud tokens that arrive before the prompt is done
                  (at the cloud's measured seconds per token; later ones are dropped)

r̂ is the device's measured prefill rate (its latest chunk; a profile prior until one is timed). Δmax
is the TPOT target; Δmin sits near the device's own τd, so the rhythm does not change at the
handoff. Once the device decodes, tokens go out every Δmin. A token is never held past Δmax
while one is buffered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class PacingConfig:
    min_interval_s: float  # Δmin
    max_interval_s: float  # Δmax: the TPOT target
    decode_interval_s: float  # τ̂d: the device's own time per token (prior)
    prefill_rate_tok_s: float | None = None  # r̂ prior, tokens/s (from a profile)

    def __post_init__(self) -> None:
        if not 0 <= self.min_interval_s <= self.max_interval_s:
            raise ValueError("pacing needs 0 <= min_interval_s <= max_interval_s")


@dataclass(frozen=True)
class DeviceProgress:
    """A snapshot of the device's local runtime."""

    prompt_total: int  # prompt tokens it prefills (the kept ones with refinement)
    prompt_done: int  # prompt tokens in its KV cache
    to_absorb: int = 0  # cloud tokens it will absorb after the prompt (received so far)
    started_at: float | None = None  # when its prefill began (for the rate estimate)
    is_decoding: bool = False  # handed off: its own tokens are coming
    recent_rate_tok_s: float | None = None  # tokens/s of its latest prefill chunk
    updated_at: float | None = None  # when its latest prefill chunk finished
    # Per-token prefill cost fitted online as alpha + beta * (tokens already in the cache):
    # attention makes later tokens dearer (10.5 -> 16.5 ms/token from 0 to 2k at slowdown 4).
    token_cost: tuple[float, float] | None = None
    prompt_cached: int = 0  # of prompt_done, the tokens a session's cache held from the start

    @property
    def is_prompt_done(self) -> bool:
        return self.prompt_done >= self.prompt_total


# A late estimate stalls the stream; an early one only slows it within Δmax: lean pessimistic.
_SAFETY = 1.1


def _cost(token_cost: tuple[float, float], start: int, end: int) -> float:
    """Seconds to prefill cache positions [start, end) at alpha + beta * position per token."""
    alpha, beta = token_cost
    return max(0.0, alpha * (end - start) + 0.5 * beta * (end * end - start * start))


class Action(Enum):
    WAIT = "wait"  # nothing to show until ``wait_s`` has passed (or new input arrives)
    SHOW = "show"  # show the next buffered token now


@dataclass(frozen=True)
class Decision:
    action: Action
    wait_s: float = 0.0  # for WAIT; math.inf: until new input


class SpeedController:
    def __init__(self, config: PacingConfig) -> None:
        self.config = config
        self.num_shown = 0
        self.last_shown_at: float | None = None

    def on_shown(self, now: float) -> None:
        self.num_shown += 1
        self.last_shown_at = now

    def prefill_rate(self, now: float, progress: DeviceProgress) -> float | None:
        """Tokens/s of the device prefill: its latest chunk (later chunks, deeper in the context,
        are the slowest: the whole-prompt average underestimated the absorb 3x at 2k tokens),
        else the average so far, else the profile prior."""
        if progress.recent_rate_tok_s:
            return progress.recent_rate_tok_s
        done_here = progress.prompt_done - progress.prompt_cached
        if progress.started_at is not None and done_here > 0:
            elapsed = now - progress.started_at
            if elapsed > 0:
                return done_here / elapsed
        return self.config.prefill_rate_tok_s

    def _estimates(self, now: float, progress: DeviceProgress) -> tuple[float, float]:
        """(when the prompt prefill ends, T̂own); inf where it cannot tell yet."""
        tau_d = self.config.decode_interval_s
        if progress.is_decoding:
            return now, now
        done, total, to_absorb = progress.prompt_done, progress.prompt_total, progress.to_absorb
        if progress.token_cost is not None:
            prefill_left = _cost(progress.token_cost, done, total)
            absorb = _cost(progress.token_cost, total, total + to_absorb)
        else:
            rate = self.prefill_rate(now, progress)
            if rate is None:
                return math.inf, math.inf
            prefill_left, absorb = (total - done) / rate, to_absorb / rate
        # Count the remaining prefill from the last chunk's end, not from now: the in-flight chunk
        # is already under way (counting from now made the estimate a sawtooth, one tooth a chunk).
        start = now if progress.updated_at is None else min(progress.updated_at, now)
        prompt_end = max(start + _SAFETY * prefill_left, now)
        absorb_end = _SAFETY * absorb + tau_d if to_absorb else 0.0  # one more forward
        return prompt_end, prompt_end + absorb_end + tau_d

    def estimate_own_token(self, now: float, progress: DeviceProgress) -> float:
        """T̂own: when the device's first own token will be ready (inf if it cannot tell yet)."""
        return self._estimates(now, progress)[1]

    def interval(
        self,
        now: float,
        num_left: int,
        progress: DeviceProgress,
        num_buffered: int | None = None,
        arrival_interval_s: float | None = None,
    ) -> float:
        """Δ before the next token, given ``num_left`` cloud tokens still to show (of which
        ``num_buffered`` are here; the rest arrive every ``arrival_interval_s``, as measured)."""
        cfg = self.config
        if progress.is_decoding:
            return cfg.min_interval_s
        prompt_end, own = self._estimates(now, progress)
        if num_buffered is not None and arrival_interval_s and math.isfinite(prompt_end):
            # The device hands off when its prompt is done and drops later cloud tokens: only
            # those arriving before then can fill the wait. Counting all of them let a slowly
            # fed display run dry before the absorb.
            arriving = int(max(prompt_end - now, 0.0) / arrival_interval_s)
            num_left = num_buffered + min(num_left - num_buffered, arriving)
        until_own = own - now
        return min(max(until_own / max(num_left, 1), cfg.min_interval_s), cfg.max_interval_s)

    def decide(
        self,
        now: float,
        num_buffered: int,
        num_left: int,
        progress: DeviceProgress,
        arrival_interval_s: float | None = None,
    ) -> Decision:
        """``num_buffered``: tokens ready to show; ``num_left``: those plus the cloud tokens
        still expected before the device's own; ``arrival_interval_s``: the cloud's measured
        time per token so far (None: assume they all arrive in time)."""
        if not num_buffered:
            return Decision(Action.WAIT, math.inf)
        if self.last_shown_at is None:
            return Decision(Action.SHOW)  # the first token goes out at once
        delta = self.interval(now, num_left, progress, num_buffered, arrival_interval_s)
        due = self.last_shown_at + delta
        return Decision(Action.SHOW) if now >= due else Decision(Action.WAIT, due - now)
