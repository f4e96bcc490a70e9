"""One device's display loop in simulated time, driven by the product's SpeedController.

Mirrors ``device_client.answer``: the device prefills its prompt from t = 0 (the request start;
progress linear up to ``prompt_done_s``), hands off then at m = the cloud tokens received so far,
absorbs them in one forward (``absorb(m)`` seconds) whose logits give its first own token, then
decodes one token per τd. The display shows one queue (cloud tokens, then the device's) when the
controller says so. Time advances only to instants that can change a decision: the controller's
release time, the handoff, the first own token, and (only when nothing is buffered) the next
cloud token's arrival. The loop ends when the device's first own token is shown; later gaps are
the device's own τd.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

from device_client.speed_controller import Action, DeviceProgress, PacingConfig, SpeedController

MAX_STEPS = 100_000  # a guard against a policy that never shows the device's token


@dataclass(frozen=True)
class DisplayResult:
    handoff_index: int  # m: cloud tokens received (and shown) before the device took over
    own_shown_at: float  # when the device's first own token is shown
    first_shown_at: float  # TTFT as the user sees it
    max_gap_s: float  # largest gap between two shown tokens up to the first own one
    handoff_gap_s: float  # last cloud token to the device's first own token


def run_display(
    pacing: PacingConfig,
    arrivals: list[float],
    prompt_total: int,
    prompt_done_s: float,
    absorb: Callable[[int], float],
) -> DisplayResult:
    """``arrivals``: when each cloud token (the first included) reaches the device, sorted."""
    ctrl = SpeedController(pacing)
    m = bisect.bisect_right(arrivals, prompt_done_s)  # received when the prompt is done
    own_at = prompt_done_s + absorb(m)
    budget = len(arrivals)
    shown, arrived = 0, 0
    first_shown = last_shown = math.nan
    max_gap = 0.0
    t = min(arrivals[0], prompt_done_s) if arrivals else prompt_done_s
    for _ in range(MAX_STEPS):
        handed_off = t >= prompt_done_s
        if handed_off:
            arrived = m
        else:
            while arrived < budget and arrivals[arrived] <= t:
                arrived += 1
        # As in ``answer.py``: decoding starts once the received tokens are absorbed, so the
        # controller keeps stretching the cloud tokens through the absorb.
        is_decoding = t >= own_at
        buffered = arrived - shown + (1 if is_decoding else 0)
        left = buffered if handed_off else buffered + budget - arrived
        done = prompt_total if handed_off else int(prompt_total * t / prompt_done_s)
        to_absorb = 0 if is_decoding else arrived
        progress = DeviceProgress(prompt_total, done, to_absorb, 0.0, is_decoding)
        seen = arrived - 1  # the cloud's measured time per token, as the client measures it
        pace = (arrivals[arrived - 1] - arrivals[0]) / seen if seen > 0 else None
        decision = ctrl.decide(t, buffered, left, progress, pace)
        if decision.action is Action.SHOW:
            if shown:
                max_gap = max(max_gap, t - last_shown)
            else:
                first_shown = t
            if is_decoding and shown == m:  # the device's first own token
                gap = t - last_shown if m else 0.0
                return DisplayResult(m, t, first_shown, max_gap, gap)
            ctrl.on_shown(t)
            shown += 1
            last_shown = t
            continue
        t_next = t + decision.wait_s
        for event in (prompt_done_s, own_at):
            if event > t:
                t_next = min(t_next, event)
        if not buffered and not handed_off and arrived < budget:
            t_next = min(t_next, arrivals[arrived])
        if not math.isfinite(t_next):
            raise RuntimeError("display loop stuck: no token and no device event")
        t = max(t_next, t + 1e-9)
    raise RuntimeError("display loop never showed the device's token")
