"""Fakes for the answer state and the answer loop: a device view, a scripted cloud stream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from common.clock import FakeClock
from common.messages import End, EndReason, FirstToken, KeepSet, Token, Usage
from device_client.answer_state import AnswerSpec, AnswerState
from device_client.speed_controller import DeviceProgress, PacingConfig
from device_client.types import Mode

EOS = 2
VOCAB = 100
PACING = PacingConfig(min_interval_s=0.05, max_interval_s=0.2, decode_interval_s=0.05)


@dataclass
class FakeDevice:
    """A device view with a fixed prompt progress; records keep-sets applied."""

    prompt_total: int = 10
    prompt_done: int = 0
    kept: list[list[int]] = field(default_factory=list)

    def progress(self) -> DeviceProgress:
        return DeviceProgress(self.prompt_total, self.prompt_done)

    def apply_keep_set(self, kept_positions: list[int]) -> None:
        self.kept.append(kept_positions)


def make_state(
    mode: Mode = Mode.PD,
    *,
    prompt_len: int = 10,
    max_tokens: int = 8,
    cloud_tokens: int = 4,
    refine_ratio: float = 0.0,
) -> tuple[AnswerState, FakeDevice, FakeClock]:
    spec = AnswerSpec(prompt_len, max_tokens, cloud_tokens, refine_ratio, VOCAB, frozenset({EOS}))
    device, clock = FakeDevice(prompt_total=prompt_len), FakeClock()
    return AnswerState(spec, mode, PACING, device, clock.now), device, clock


def first(token_id: int = 10, prompt_tokens: int = 10) -> FirstToken:
    return FirstToken(
        token_id=token_id, text="x", prompt_tokens=prompt_tokens, queue_s=0.0, prefill_s=0.1
    )


def token(index: int, token_id: int | None = None) -> Token:
    return Token(index=index, token_id=10 + index if token_id is None else token_id, text="x")


def end(reason: EndReason = EndReason.BUDGET, message: str = "", completion: int = 1) -> End:
    usage = Usage(prompt_tokens=10, completion_tokens=completion, busy_s=0.3)
    return End(reason=reason, usage=usage, message=message)


def keep_set(positions: list[int], is_available: bool = True) -> KeepSet:
    return KeepSet(is_available=is_available, kept_positions=positions)


class ScriptedCloud:
    """A fake cloud: ``open_cloud`` for ``DeviceClient`` / ``Answer``. Each event is sent
    ``delay_s`` after the previous; ``after_handoff`` events are sent once a handoff came;
    ``silent`` sends nothing at all (the connection stays open); connecting takes ``connect_s``."""

    def __init__(self, events=(), *, delay_s=0.0, after_handoff=(), silent=False, connect_s=0.0):
        self.script, self.delay_s, self.connect_s = list(events), delay_s, connect_s
        self.after_handoff, self.silent = list(after_handoff), silent
        self.handoffs: list[int] = []
        self.closed = False
        self._handed_off = asyncio.Event()

    async def __call__(self, request, config) -> ScriptedCloud:
        self._handed_off = asyncio.Event()  # bound to the loop of this answer
        await asyncio.sleep(self.connect_s)
        return self

    async def events(self):
        if self.silent:
            await asyncio.Event().wait()
        for event in self.script:
            await asyncio.sleep(self.delay_s)
            yield event
        if self.after_handoff:
            await self._handed_off.wait()
            for event in self.after_handoff:
                yield event

    async def handoff(self, at_index: int) -> None:
        self.handoffs.append(at_index)
        self._handed_off.set()

    async def aclose(self) -> None:
        self.closed = True
