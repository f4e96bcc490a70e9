"""One device's answer in simulated time, driving the product's ``AnswerState``.

The client's three tasks (``device_client/answer.py``) are replaced by events on one simulated
clock, and everything else is the product's: the answer state decides what to show, when to hand
off and what is left, its ``SpeedController`` paces. The events are the ones the client reacts to:
- a cloud token arrives (``arrivals``: when each one, the first included, reaches the device);
- the device finishes a prefill chunk (``SimDevice.chunk_ends``) or its whole prompt, and then
  hands off at m = the cloud tokens received by then;
- the absorb of those m tokens ends (``absorb(m)`` seconds later): its logits give the device's
  first own token;
- a release instant the display waits for.
After each event the display asks the state again, as the client's display loop does when it is
woken. The run ends when the device's first own token is shown; later gaps are the device's own τd.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from device_client.answer_state import AnswerSpec, AnswerState, StepKind
from device_client.speed_controller import DeviceProgress, PacingConfig
from device_client.types import Mode

MAX_STEPS = 100_000  # a guard against a policy that never shows the device's token


class SimClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


class SimDevice(Protocol):
    """A device model for the simulator: the ``DeviceView`` the state reads, and its timeline."""

    prompt_done_s: float  # when its (kept) prompt prefill ends

    def chunk_ends(self) -> list[float]:
        """Instants its progress changes before the prompt is done (the client wakes on each)."""
        ...

    def progress(self) -> DeviceProgress: ...

    def apply_keep_set(self, kept_positions: list[int]) -> None: ...


@dataclass
class LinearPrefill:
    """The fleet simulator's device: prompt progress linear in time from 0 to ``prompt_done_s``,
    its rate known from the start (the profile prior in ``PacingConfig``)."""

    prompt_total: int
    prompt_done_s: float
    clock: Callable[[], float]

    def chunk_ends(self) -> list[float]:
        return []

    def progress(self) -> DeviceProgress:
        t, total = self.clock(), self.prompt_total
        done = total if t >= self.prompt_done_s else int(total * t / self.prompt_done_s)
        return DeviceProgress(total, done, started_at=0.0)

    def apply_keep_set(self, kept_positions: list[int]) -> None:
        pass  # the simulator gives the kept prompt length up front


@dataclass(frozen=True)
class DisplayResult:
    handoff_index: int  # m: cloud tokens received (and shown) before the device took over
    own_shown_at: float  # when the device's first own token is shown
    first_shown_at: float  # TTFT as the user sees it
    max_tpot_s: float  # largest gap between two shown tokens up to the first own one
    handoff_gap_s: float  # last cloud token to the device's first own token
    shown_at: list[float] = field(default_factory=list)  # every display time, the own one last


def run_display(
    pacing: PacingConfig,
    arrivals: list[float],
    prompt_total: int,
    prompt_done_s: float,
    absorb: Callable[[int], float],
) -> DisplayResult:
    """The fleet simulator's entry: a ``LinearPrefill`` device. ``arrivals`` sorted."""
    clock = SimClock()
    return simulate_display(
        pacing, arrivals, LinearPrefill(prompt_total, prompt_done_s, clock.now), absorb, clock
    )


def simulate_display(
    pacing: PacingConfig,
    arrivals: list[float],
    device: SimDevice,
    absorb: Callable[[int], float],
    clock: SimClock,
) -> DisplayResult:
    """Run one pd answer up to the device's first own token; ``device`` reads ``clock``."""
    budget = len(arrivals)
    # One token past the cloud's budget: the device always shows its own first token.
    spec = AnswerSpec(
        prompt_len=max(device.progress().prompt_total, 1),
        max_tokens=budget + 1,
        cloud_tokens=max(budget - 1, 0),
        refine_ratio=0.0,
        vocab_size=1,
        eos_token_ids=frozenset(),
    )
    state = AnswerState(spec, Mode.PD, pacing, device, clock.now)
    # (time, order, what): at equal times cloud tokens come first: a token arriving exactly
    # when the prompt is done is received (m is the state's, and the same count as
    # ``timing_model.handoff_index``: tokens received when the prompt prefill ends).
    events: list[tuple[float, int, str]] = [(at, i, "cloud") for i, at in enumerate(arrivals)]
    events += [(at, budget, "chunk") for at in device.chunk_ends()]
    events.append((device.prompt_done_s, budget + 1, "prompt done"))
    heapq.heapify(events)
    shown: list[float] = []
    wake_at = math.inf
    for _ in range(MAX_STEPS):
        step = state.next_step()
        if step.kind is StepKind.SHOW:
            shown.append(clock.t)
            if step.source == "device":
                return _result(state, shown)
            continue
        assert step.kind is StepKind.WAIT, "the simulated answer ends at the device's token"
        wake_at = clock.t + step.wait_s
        if events and events[0][0] <= wake_at:
            at, order, what = heapq.heappop(events)
            clock.t = max(clock.t, at)
            _apply(what, order, state, events, absorb, clock)
        elif math.isfinite(wake_at):
            clock.t = wake_at
        else:
            raise RuntimeError("display loop stuck: no token and no device event")
    raise RuntimeError("display loop never showed the device's token")


def _apply(what: str, order: int, state: AnswerState, events: list, absorb, clock: SimClock):
    """One event, as the client's task that sees it handles it."""
    if what == "cloud":
        state.on_cloud_token(order, 0)
    elif what == "prompt done":  # the device worker: hand off, then absorb the m received
        m = len(state.hand_off())
        if m:
            heapq.heappush(events, (clock.t + absorb(m), -1, "absorbed"))
        else:  # nothing to absorb: the prompt's own logits give the first token
            state.on_device_token(0)
    elif what == "absorbed":
        state.on_absorbed(state.handoff_index or 0)
        state.on_device_token(0)


def _result(state: AnswerState, shown: list[float]) -> DisplayResult:
    m = state.handoff_index
    assert m is not None
    gaps = [b - a for a, b in zip(shown, shown[1:], strict=False)]
    return DisplayResult(
        handoff_index=m,
        own_shown_at=shown[-1],
        first_shown_at=shown[0],
        max_tpot_s=max(gaps, default=0.0),
        handoff_gap_s=shown[-1] - shown[-2] if m else 0.0,
        shown_at=shown,
    )
