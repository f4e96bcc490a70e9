"""What the client has measured of its own device, and the untuned plan built on it.

Pure (no torch, no clock). Without a settings file (``default_settings``: an ``untuned`` bucket)
a fixed N and Δmax fit no device: at the phone emulation they stalled the first answer at the
handoff (measured: the cloud stream shown at 250 ms while the device's own rhythm was 240 ms
quiet, 600 ms loaded, the cloud tokens flushed at once after the absorb since τ̂d was unknown,
and the single-chunk prompt gave the speed controller no estimate until it was done). So the
client plans each request the way the tuner plans a bucket (``timing_model.pacing_for`` and
``safe_budget``), with a device profile it fits from its own forwards: a warm-up when the client
starts (``local_runtime.measure_forwards``), then every answer's prefill chunks, absorb and
decode steps. It knows nothing of the cloud before it answers, so the plan assumes TTFT = 0 and
a keep-set too late to help (a budget that covers the whole catch-up, a few more cloud tokens
than a tuned one).
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from common.profiles import DecodeCost, DeviceProfile, PrefillCost, fit_nonnegative
from common.timing_model import pacing_for, safe_budget

from .speed_controller import PacingConfig

Forward = tuple[int, int, float]  # (tokens, cached context before it, seconds)

MAX_SAMPLES = 48  # the latest multi-token forwards kept for the fit
# Until an answer has checked the warm-up's estimate, the prefill may be this much slower: the
# warm-up runs alone, an answer's prefill beside the cloud. Measured on the shared 2-core machine
# (load 4-7) at the phone emulation: the first answers' 36-token prompt chunk took 3-4x the
# warm-up's per-token time, so +100% (and the display's stretch to Δmax) is the first answer's
# margin; from the second answer on, the error measured by the previous one is.
UNCHECKED_ERROR = 1.0
QUADRATIC_SPAN = 256  # cache positions the forwards must span before c is fitted
EXTRAPOLATION = 2.0  # prompts longer than this x the longest context measured are extrapolated


class SelfProfile:
    """The device's prefill cost a + b·n + c·((ctx + n)² - ctx²) per forward of n tokens after
    ctx cached ones, fitted over its latest forwards, and τ̂d (the median single-token step,
    averaged over answers). ``error`` is how far the latest session's forwards took from what
    the profile predicted before it (the plan's safety margin)."""

    def __init__(self) -> None:
        self._forwards: deque[Forward] = deque(maxlen=MAX_SAMPLES)
        self.decode_s: float | None = None
        self.error: float | None = None

    def observe(self, forwards: list[Forward], decode_s: list[float]) -> None:
        """One session's forwards (a warm-up's or an answer's; its prompt chunks and absorbs
        are fitted) and its decode steps."""
        multi = [f for f in forwards if f[0] > 1 and f[2] > 0]
        before = self.profile()
        if before is not None and multi:
            measured = sum(seconds for _, _, seconds in multi)
            predicted = sum(before.prefill.extend_time(n, ctx) for n, ctx, _ in multi)
            if predicted > 0:
                self.error = abs(measured / predicted - 1.0)
        self._forwards.extend(multi)
        if decode_s:
            measured = statistics.median(decode_s)
            old = self.decode_s
            self.decode_s = measured if old is None else 0.5 * (old + measured)

    def profile(self, prompt_len: int = 0) -> DeviceProfile | None:
        """The fitted device profile (for prompts of ``prompt_len``); None before a
        multi-token forward and a decode step.

        Attention's quadratic term is fitted only once the forwards span QUADRATIC_SPAN cache
        positions: from short prompts alone it is unidentifiable (a c-only fit of two chat
        prompts put a 2k-token prefill at hours). Past EXTRAPOLATION x the longest context
        measured, the linear fit underestimates, so the error is at least UNCHECKED_ERROR."""
        if self.decode_s is None or not self._forwards:
            return None
        last_n, last_ctx, _ = self._forwards[-1]
        samples = [*self._forwards, (1, last_ctx + last_n, self.decode_s)]
        ends = [ctx + n for n, ctx, _ in samples]
        span = max(ends) - min(ends)
        rows = [[1.0, n, (ctx + n) ** 2 - ctx**2 if span >= QUADRATIC_SPAN else 0.0]
                for n, ctx, _ in samples]  # fmt: skip
        (a, b, c), rmse, rel = fit_nonnegative(rows, [s for _, _, s in samples])
        error = max(rel, UNCHECKED_ERROR if self.error is None else self.error)
        if prompt_len > EXTRAPOLATION * max(ends):
            error = max(error, UNCHECKED_ERROR)
        prefill = PrefillCost(a=a, b=b, c=c, rmse_s=rmse, max_rel_err=error)
        return DeviceProfile(prefill, DecodeCost(d0=self.decode_s), meta={"name": "self"})


def untuned_plan(
    profile: DeviceProfile,
    prompt_len: int,
    max_tokens: int,
    refine_ratio: float = 0.0,
    jitter_s: float = 0.0,
    ttft_s: float = 0.0,
) -> tuple[int, PacingConfig]:
    """(N, pacing) for one request by the tuner's rule, from this device's profile: Δmin = τd,
    Δmax = 1.5 τd (+ jitter), N the least budget whose stream, shown Δplan apart from
    ``ttft_s`` (0: nothing known of the cloud), lasts until the device's first own token."""
    tau_d = profile.decode.time(prompt_len)
    p = pacing_for(tau_d, jitter_s)
    n, _ = safe_budget(
        prompt_len,
        refine_ratio,
        ttft_s,
        tau_d,
        p.plan_interval_s,
        profile,
        jitter_s,
        keep_set_at_s=math.inf,  # a keep-set's saving is not counted on
        max_budget=max(max_tokens - 1, 0),
    )
    prefill_s = profile.prefill.time(prompt_len)
    pacing = PacingConfig(
        min_interval_s=p.min_interval_s,
        max_interval_s=p.max_interval_s,
        decode_interval_s=tau_d,
        prefill_rate_tok_s=prompt_len / prefill_s if prefill_s > 0 else None,
    )
    return n, pacing
