"""Simulated time for the answer loop: an event loop whose clock jumps to the next timer, and a
device runtime whose forwards take scripted (simulated) seconds.

With them the real ``Answer`` (its three tasks, their wake-ups and timeouts) runs a scripted
scenario in milliseconds (``run_answer``, on a stub model: no weights), and the same scenario
runs through the fleet simulator.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from types import SimpleNamespace

from common.messages import GenerateRequest
from device_client.answer import Answer
from device_client.config import ClientConfig
from device_client.local_runtime import fit_token_cost
from device_client.speed_controller import DeviceProgress, PacingConfig
from device_client.types import GenerationResult, Mode


class _JumpingSelector(selectors.DefaultSelector):
    """Never sleeps: where the loop would wait for a timer, the clock jumps to it."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None):
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: every task waits and no timer is set (a hang)")
        assert self.loop is not None
        self.loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0

    def time(self) -> float:
        return self.now


@dataclass
class ScriptedPrefill:
    """A device's prompt prefill in chunks of scripted (tokens, seconds), from t = 0: the
    progress ``LocalSession`` would report, as a function of time (the simulator's device)."""

    chunks: list[tuple[int, float]]
    clock: Callable[[], float]
    kept: list[list[int]] = field(default_factory=list)

    @property
    def chunk_end_times(self) -> list[float]:
        ends, t = [], 0.0
        for _, seconds in self.chunks:
            t += seconds
            ends.append(t)
        return ends

    @property
    def prompt_done_s(self) -> float:
        return self.chunk_end_times[-1]

    def chunk_ends(self) -> list[float]:
        return self.chunk_end_times[:-1]

    def progress(self) -> DeviceProgress:
        return self.progress_after(sum(1 for end in self.chunk_end_times if end <= self.clock()))

    def progress_after(self, num_done: int, updated_at: float | None = None) -> DeviceProgress:
        """The snapshot once ``num_done`` chunks are done (the latest at ``updated_at``)."""
        done_chunks, fitted, done = self.chunks[:num_done], [], 0
        for tokens, seconds in done_chunks:
            fitted.append((done + tokens / 2, seconds / tokens))
            done += tokens
        last = done_chunks[-1] if done_chunks else None
        if updated_at is None and num_done:
            updated_at = self.chunk_end_times[num_done - 1]
        return DeviceProgress(
            sum(tokens for tokens, _ in self.chunks),
            done,
            started_at=0.0,
            recent_rate_tok_s=last[0] / last[1] if last else None,
            updated_at=updated_at,
            token_cost=fit_token_cost(fitted),
        )

    def apply_keep_set(self, kept_positions: list[int]) -> None:
        self.kept.append(kept_positions)


class ScriptedSession:
    """A ``LocalSession`` stand-in for ``Answer``: each call says how long its forward takes;
    ``VirtualExecutor`` finishes it that much later in simulated time."""

    def __init__(self, prefill: ScriptedPrefill, prompt_len: int, absorb_s, decode_s: float):
        self._prefill, self._absorb_s, self._decode_s = prefill, absorb_s, decode_s
        self.prompt_len = prompt_len
        self.prompt_total = sum(tokens for tokens, _ in prefill.chunks)
        self._num_started = self._num_done = 0
        self._updated_at: float | None = None
        self.absorbed = 0
        self.num_cached = 0  # no session cache: every prompt token is prefilled
        self.decode_s: list[float] = []

    @property
    def is_prompt_done(self) -> bool:
        return self._num_done == len(self._prefill.chunks)

    def progress(self) -> DeviceProgress:
        return self._prefill.progress_after(self._num_done, self._updated_at)

    def apply_keep_set(self, kept_positions: list[int]) -> None:
        self._prefill.apply_keep_set(kept_positions)

    def duration(self, fn, *args) -> float:
        """Simulated seconds of ``fn(*args)``, asked as the call starts."""
        if fn == self.prefill_chunk:
            return self._prefill.chunks[self._num_done][1]
        (token_ids,) = args
        return self._decode_s if len(token_ids) == 1 else self._absorb_s(len(token_ids))

    def prefill_chunk(self) -> int:  # runs as the forward ends
        self._num_done += 1
        self._updated_at = self._prefill.clock()
        return self._prefill.chunks[self._num_done - 1][0]

    def absorb(self, token_ids: list[int]) -> None:
        self.absorbed += len(token_ids)

    def next_token(self, sampling) -> int:
        return 7


class VirtualExecutor(Executor):
    """Runs each call at the end of its simulated duration, on the virtual loop."""

    def __init__(self, session: ScriptedSession) -> None:
        self._session = session

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        delay = self._session.duration(fn, *args)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: future.set_result(fn(*args, **kwargs)))
        return future


class _Tokenizer:
    def __len__(self) -> int:
        return 100

    def decode(self, ids, skip_special_tokens=True) -> str:
        return "x" * len(ids)


STUB_MODEL = SimpleNamespace(  # what ``Answer`` reads of a loaded model: vocabulary, text, EOS
    model=SimpleNamespace(get_input_embeddings=lambda: SimpleNamespace(num_embeddings=100)),
    tokenizer=_Tokenizer(),
    eos_token_ids=frozenset({2}),
)


def run_answer(
    loop: VirtualTimeLoop,
    session: ScriptedSession,
    request: GenerateRequest,
    pacing: PacingConfig,
    open_cloud: Callable,
) -> GenerationResult:
    """One pd answer through the real ``Answer`` on ``loop`` (closed after); no fallback."""
    answer = Answer(
        STUB_MODEL,
        request,
        Mode.PD,
        pacing,
        ClientConfig(cloud_url="http://fake", stall_timeout_s=30.0),
        VirtualExecutor(session),
        session=session,
        open_cloud=open_cloud,
        clock=loop.time,
    )

    async def drain() -> None:
        async for _ in answer:
            pass

    try:
        loop.run_until_complete(drain())
    finally:
        loop.close()
    assert answer.result is not None and answer.result.fallback is None
    return answer.result
