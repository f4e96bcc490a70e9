"""One answer's state: which token came from where, when to hand off, what to show next.

Pure: no asyncio, no model, no clock of its own (one is injected). The client's three tasks
(``answer.py``) and the fleet simulator (``benchmarks/planner/sim_display.py``) drive it alike:
- the cloud reader feeds each cloud event to ``on_cloud_event``;
- the device worker calls ``hand_off`` when its prompt prefill is done, then ``on_absorbed`` and
  ``on_device_token``, and ``on_device_done`` (or ``on_device_failed``) at the end;
- the display loop asks ``next_step`` whether to show a token now, wait, or end.

Hand off at *received*, not *shown*: measured on this machine, the first absorb after a long
prefill takes about a second, during which the display must keep showing tokens; absorbing only
shown tokens then needs another round, and another (the device chases the display), which showed
up as a 0.6 s gap at the handoff. Received tokens are already known, so absorbing them all ends
the chase, stops the cloud earlier and wastes no cloud token (the paper's "amortized using
received tokens"). Cloud tokens at or past m that arrive later are dropped.

The cloud is not trusted: an event with a token id outside the vocabulary, an index out of
order, a keep-set that is malformed or keeps less than the refine ratio allows, or an end that
contradicts the tokens is a cloud failure. The cloud failing at any point is the same path as
the device being faster: the worker hands off at what was received, and ``fallback`` says why.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Protocol

from common.messages import End, EndReason, FirstToken, GenerateRequest, KeepSet, Token

from .speed_controller import Action, DeviceProgress, PacingConfig, SpeedController
from .types import Mode, Source

# A wait shorter than this is a rounding artefact (t + (due - t) can land an ulp short of due):
# show now rather than spin on a timer that cannot fire later than it was set.
_MIN_WAIT_S = 1e-9


@dataclass(frozen=True)
class AnswerSpec:
    """What the answer state needs to know of the request and of the device's model."""

    prompt_len: int  # L, the full prompt
    max_tokens: int
    cloud_tokens: int  # N: the cloud sends at most 1 + N tokens
    refine_ratio: float  # ρ asked for (0: no keep-set wanted)
    vocab_size: int  # token ids must lie in [0, vocab_size)
    eos_token_ids: frozenset[int]

    @classmethod
    def of(
        cls, request: GenerateRequest, vocab_size: int, eos_token_ids: frozenset[int]
    ) -> AnswerSpec:
        assert request.prompt_ids, "the device sends token ids"
        return cls(
            len(request.prompt_ids),
            request.max_tokens,
            request.cloud_tokens,
            request.refine_ratio,
            vocab_size,
            eos_token_ids,
        )

    @property
    def cloud_budget(self) -> int:
        """Tokens the cloud may send: the first plus N, within the answer."""
        return min(1 + self.cloud_tokens, self.max_tokens)

    @property
    def min_kept(self) -> int:
        """The fewest prompt positions a keep-set may keep at the asked ratio (the cloud keeps
        L - floor(ρL), or more for protected tokens; 1e-6 absorbs float error in (1-ρ)L)."""
        return math.ceil((1.0 - self.refine_ratio) * self.prompt_len - 1e-6)


class DeviceView(Protocol):
    """What the state reads of the device's runtime (``LocalSession``, or a simulated device)."""

    def progress(self) -> DeviceProgress:
        """The prompt prefill so far (``to_absorb`` and ``is_decoding`` are the state's)."""
        ...

    def apply_keep_set(self, kept_positions: list[int]) -> None: ...


class StepKind(Enum):
    SHOW = "show"  # show ``token_id`` now
    WAIT = "wait"  # until ``wait_s`` has passed or something changed (inf: until a change)
    END = "end"  # the answer is over (``reason``)


@dataclass(frozen=True)
class Step:
    kind: StepKind
    token_id: int = -1
    source: Source = "cloud"
    wait_s: float = 0.0
    reason: str = ""


class AnswerState:
    """One answer's bookkeeping, for the three roles in the module docstring."""

    def __init__(
        self,
        spec: AnswerSpec,
        mode: Mode,
        pacing: PacingConfig,
        device: DeviceView,
        clock: Callable[[], float],
    ) -> None:
        self.spec, self.mode = spec, mode
        self.controller = SpeedController(pacing)
        self._device = device
        self._clock = clock
        self.started_at = clock()
        self.received: list[int] = []  # cloud token ids, by answer index, up to the handoff
        self._next_cloud_index = 0  # the index the next cloud token must carry
        self._received_span = (0.0, 0.0)  # when the first and the latest cloud token came
        self._has_cloud_eos = False
        self._has_keep_set = False
        self._queue: deque[tuple[int, Source]] = deque()  # ready to show
        self.num_shown = 0
        self.first_token_source: Source | None = None
        self.is_cloud_open = mode is not Mode.DEVICE  # the cloud may still send
        self.is_cloud_connected = False  # a stream was opened: a handoff can reach the cloud
        self.cloud_end: End | None = None
        self.handoff_index: int | None = None  # m
        self.num_absorbed = 0  # received cloud tokens in the device's cache
        self._num_device_tokens = 0
        self.is_device_done = False  # the device worker ended: it queues nothing more
        self.device_error: str | None = None
        self.fallback: str | None = None  # why the device finished alone (the cloud failed)
        self.keep_set_note: str | None = None  # why a keep-set was not applied as sent
        self.end_reason: str | None = None  # eos | max_tokens | error, once over
        self.notes: list[tuple[float, str]] = []  # (seconds since start, what happened)
        # (seconds since start, the controller's T̂own then, tokens left): one per cloud token
        # shown in pd, to check the estimate against when the device's first token came.
        self.pacing_trace: list[tuple[float, float, int]] = []

    def start(self) -> None:
        """The request starts now: display times count from here."""
        self.started_at = self._clock()

    def note(self, what: str) -> None:
        self.notes.append((self._clock() - self.started_at, what))

    # -- the cloud's side ----------------------------------------------------------------------

    def on_cloud_connected(self) -> None:
        self.is_cloud_connected = True

    def on_cloud_event(self, event: KeepSet | FirstToken | Token | End) -> bool:
        """Take one cloud event; True when the stream is over (its end, or a bad event)."""
        if isinstance(event, KeepSet):
            return self.on_keep_set(event)
        if isinstance(event, FirstToken):
            if event.prompt_tokens != self.spec.prompt_len:
                return self._bad_event(
                    f"the cloud counted {event.prompt_tokens} prompt tokens, "
                    f"the device sent {self.spec.prompt_len}"
                )
            return self.on_cloud_token(0, event.token_id)
        if isinstance(event, Token):
            return self.on_cloud_token(event.index, event.token_id)
        return self.on_cloud_end(event)

    def on_cloud_token(self, index: int, token_id: int) -> bool:
        problem = self._check_token(index, token_id)
        if problem:
            return self._bad_event(problem)
        # Counted apart from ``received``: past the handoff tokens are dropped, and checking
        # against len(received) broke the stream at the second dropped token.
        self._next_cloud_index += 1
        if self.handoff_index is None:  # past the handoff, cloud tokens are dropped
            now = self._clock()
            self._received_span = (self._received_span[0] if self.received else now, now)
            self.received.append(token_id)
            self._has_cloud_eos |= token_id in self.spec.eos_token_ids
            self._queue.append((token_id, "cloud"))
        return False

    def _check_token(self, index: int, token_id: int) -> str | None:
        spec = self.spec
        if index != self._next_cloud_index:
            return f"cloud sent token {index}, expected {self._next_cloud_index}"
        if index > spec.cloud_tokens:
            return f"cloud sent token {index}, past its budget of 1 + {spec.cloud_tokens}"
        if not 0 <= token_id < spec.vocab_size:
            return f"token id {token_id} is outside the vocabulary (0..{spec.vocab_size - 1})"
        return None

    def on_keep_set(self, event: KeepSet) -> bool:
        """Apply a keep-set to the prompt positions not prefilled yet, if it was asked for and
        is sound; a malformed one is a cloud failure."""
        problem = self._check_keep_set(event)
        if problem:
            self.keep_set_note = f"refused the keep-set: {problem}"
            return self._bad_event(problem)
        self._has_keep_set = True
        if self.spec.refine_ratio <= 0.0:
            self.keep_set_note = "ignored a keep-set the device did not ask for (refine_ratio 0)"
        elif not event.is_available:
            self.keep_set_note = f"the cloud could not refine: {event.reason}"
        else:
            self._device.apply_keep_set(event.kept_positions)
        self.note(f"keep-set: {len(event.kept_positions)} kept ({event.reason})")
        return False

    def _check_keep_set(self, event: KeepSet) -> str | None:
        if self._has_keep_set:
            return "a second keep-set"
        if self._next_cloud_index:
            return "a keep-set after the first token"
        if self.spec.refine_ratio <= 0.0 or not event.is_available:
            return None  # nothing will be applied
        positions, num_prompt = event.kept_positions, self.spec.prompt_len
        outside = [p for p in positions if not 0 <= p < num_prompt]
        if outside:
            return f"keep-set position {outside[0]} is outside the prompt (0..{num_prompt - 1})"
        if any(a >= b for a, b in zip(positions, positions[1:], strict=False)):
            return "keep-set positions are not sorted and unique"
        if len(positions) < self.spec.min_kept:
            return (
                f"the keep-set keeps {len(positions)} of {num_prompt} prompt tokens; "
                f"refine_ratio {self.spec.refine_ratio:g} allows no fewer than {self.spec.min_kept}"
            )
        return None

    def on_cloud_end(self, event: End) -> bool:
        self.cloud_end = event
        if event.reason is EndReason.ERROR:
            self.on_cloud_failed(f"cloud error: {event.message}")
        elif (
            event.reason is EndReason.EOS and self.handoff_index is None and not self._has_cloud_eos
        ):
            self._bad_event("the cloud ended with eos but sent no end-of-sequence token")
        return True

    def _bad_event(self, problem: str) -> bool:
        self.on_cloud_failed(f"bad cloud event: {problem}")
        return True

    def on_cloud_failed(self, reason: str) -> None:
        """The cloud failed; whatever it delivered before stays, the device finishes the rest."""
        if self.is_cloud_answer_done or (
            self.handoff_index is not None and self.is_cloud_connected
        ):
            return  # the cloud delivered its part; a failure after the handoff costs nothing
        if self.fallback is None:
            self.fallback = reason
            self.note(f"fallback: {reason}")

    def on_cloud_closed(self) -> None:
        """The cloud stream is over (its end, a failure, or closed by us)."""
        self.is_cloud_open = False
        if self.mode is Mode.CLOUD and self.fallback is None and not self.is_cloud_answer_done:
            reason = self.cloud_end.reason.value if self.cloud_end else "no end event"
            self.fallback = (
                f"the cloud stopped after {len(self.received)} of {self.spec.max_tokens} "
                f"tokens ({reason})"
            )
            self.note(f"fallback: {self.fallback}")

    @property
    def is_cloud_answer_done(self) -> bool:
        """The cloud alone produced the whole answer (an end-of-sequence token, or max_tokens)."""
        if self.handoff_index is not None:
            return False
        return self._has_cloud_eos or len(self.received) >= self.spec.max_tokens

    @property
    def is_device_needed(self) -> bool:
        """Cloud-only runs the device only when the cloud fails."""
        return self.mode is not Mode.CLOUD or self.fallback is not None

    # -- the device's side ---------------------------------------------------------------------

    def hand_off(self) -> list[int]:
        """The prompt is prefilled: take over at m = cloud tokens received now; return them."""
        assert self.handoff_index is None, "one handoff per answer"
        self.handoff_index = len(self.received)
        self.note(f"handoff at {self.handoff_index}")
        return list(self.received)

    def on_absorbed(self, num_tokens: int) -> None:
        """``num_tokens`` more received cloud tokens are in the device's cache."""
        self.num_absorbed += num_tokens

    def on_device_token(self, token_id: int) -> bool:
        """The device sampled its next token; True while it should decode another."""
        assert self.handoff_index is not None, "device tokens come after the handoff"
        index = self.handoff_index + self._num_device_tokens
        self._num_device_tokens += 1
        self._queue.append((token_id, "device"))
        return token_id not in self.spec.eos_token_ids and index + 1 < self.spec.max_tokens

    def on_device_failed(self, reason: str) -> None:
        self.device_error = reason
        self.note(f"device failed: {reason}")
        self.on_device_done()

    def on_device_done(self) -> None:
        self.is_device_done = True

    def progress(self) -> DeviceProgress:
        """The device's progress as the speed controller plans with it."""
        prompt = self._device.progress()
        if self.mode is Mode.CLOUD and self.fallback is None:
            return replace(prompt, is_decoding=True)  # nothing to wait for: show on arrival
        # Decoding starts when the received tokens are absorbed, not at the handoff: that absorb
        # takes about a second at 2k tokens, and counting it as done drained the buffer (a 1.4 s
        # stall measured at the handoff).
        to_absorb = max(len(self.received) - self.num_absorbed, 0)
        is_decoding = self.handoff_index is not None and to_absorb == 0
        return replace(prompt, to_absorb=to_absorb, is_decoding=is_decoding)

    # -- the display's side --------------------------------------------------------------------

    @property
    def num_left(self) -> int:
        """Tokens to show before the device's own: queued plus cloud tokens still due."""
        due = 0
        if self.is_cloud_open and self.handoff_index is None:
            due = max(0, self.spec.cloud_budget - len(self.received))
        return len(self._queue) + due

    @property
    def cloud_pace(self) -> float | None:
        """Seconds per cloud token so far (first to latest received); None before two."""
        if len(self.received) < 2:
            return None
        first, latest = self._received_span
        return (latest - first) / (len(self.received) - 1)

    def next_step(self) -> Step:
        """What the display does now: show the next token, wait, or end the answer."""
        if self.end_reason is not None:
            return Step(StepKind.END, reason=self.end_reason)
        if self.num_shown >= self.spec.max_tokens:
            return self._end("max_tokens")
        if not self._queue:
            reason = self._reason_over()
            if reason is not None:
                return self._end(reason)
        now = self._clock()
        progress = self.progress()
        decision = self.controller.decide(
            now, len(self._queue), self.num_left, progress, self.cloud_pace
        )
        if decision.action is Action.WAIT and decision.wait_s > _MIN_WAIT_S:
            return Step(StepKind.WAIT, wait_s=decision.wait_s)
        token_id, source = self._queue.popleft()
        if source == "cloud" and self.mode is Mode.PD:
            own = self.controller.estimate_own_token(now, progress)
            self.pacing_trace.append((now - self.started_at, own - self.started_at, self.num_left))
        if token_id in self.spec.eos_token_ids:
            return self._end("eos")
        self.num_shown += 1
        self.first_token_source = self.first_token_source or source
        self.controller.on_shown(now)
        return Step(StepKind.SHOW, token_id, source)

    def _reason_over(self) -> str | None:
        """Why nothing more will be shown (the queue is empty), or None while more may come."""
        if self.is_cloud_answer_done:
            return "eos"
        if self.is_device_done and (self.handoff_index is not None or not self.is_cloud_open):
            return "error" if self.device_error is not None else "eos"
        return None

    def _end(self, reason: str) -> Step:
        self.end_reason = reason
        return Step(StepKind.END, reason=reason)

    @property
    def cloud_unused_reason(self) -> str | None:
        """Why the cloud contributed no shown token (None when it did)."""
        if self.first_token_source == "cloud":
            return None
        if self.mode is Mode.DEVICE:
            return "device-only mode: the cloud was not asked"
        if self.fallback is not None:
            return self.fallback
        if self.handoff_index == 0:
            return "the device finished its prompt before the cloud's first token"
        return None
