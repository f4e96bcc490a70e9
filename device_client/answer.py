"""One answer, end to end on the device: pd, device-only and cloud-only share this loop.

Three cooperating tasks:
- the cloud reader collects cloud tokens in order (and applies a refinement keep-set);
- the device worker prefills the (kept) prompt in chunks; when it is done it hands off at
  m = the cloud tokens received so far, absorbs them in one forward, and decodes on;
- the display loop shows one queue (cloud tokens, then the device's) at the pace the
  ``SpeedController`` sets.

Why hand off at *received*, not *shown*: measured on this machine, the first absorb after a
long prefill takes about a second, during which the display must keep showing tokens; absorbing
only shown tokens then needs another round, and another (the device chases the display), which
showed up as a 0.6 s gap at the handoff. Received tokens are already known, so absorbing them all
ends the chase, stops the cloud earlier and wastes no cloud token (the paper's "amortized using
received tokens"). Cloud tokens at or past m that arrive later are dropped.

The cloud failing at any point is the same path as the device being faster: the worker hands
off at what was received, and ``fallback`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from common.detokenize import Detokenizer
from common.errors import PDError
from common.messages import End, EndReason, FirstToken, GenerateRequest, KeepSet, Token
from common.model import LoadedModel

from .config import ClientConfig
from .local_runtime import KVPrefix, LocalSession
from .speed_controller import Action, PacingConfig, SpeedController
from .transports import CloudStream, open_stream
from .types import DisplayedToken, GenerationResult, Mode, Source

_END_EVENT_GRACE_S = 1.0  # after the answer, how long to wait for the cloud's usage report


class Answer:
    def __init__(
        self,
        lm: LoadedModel,
        request: GenerateRequest,
        mode: Mode,
        pacing: PacingConfig,
        config: ClientConfig,
        executor: Executor,
        on_done: Callable[[Answer], None] | None = None,
        prefix: KVPrefix | None = None,
    ) -> None:
        """``prefix``: a session's cache of the first prompt tokens (``session.py``)."""
        assert request.prompt_ids, "the device sends token ids"
        self._on_done = on_done
        self.request, self.mode, self.config = request, mode, config
        self._lm, self._executor = lm, executor
        self.session = LocalSession(
            lm,
            request.prompt_ids,
            config.prefill_chunk_tokens,
            config.device_slowdown,
            prefix=prefix,
        )
        self.controller = SpeedController(pacing)
        self._detok = Detokenizer(lm.tokenizer)
        self._received: list[int] = []  # cloud token ids, by answer index
        self._next_cloud_index = 0  # the index the next cloud token must carry
        self._received_span = (0.0, 0.0)  # when the first and the latest cloud token came
        self._queue: deque[tuple[int, Source]] = deque()  # ready to show
        self.tokens: list[DisplayedToken] = []
        self._wake = asyncio.Event()  # the display loop: something changed
        self._stream: CloudStream | None = None
        self._handoff_task: asyncio.Task | None = None
        self._cloud_open = mode is not Mode.DEVICE
        self._worker: asyncio.Task | None = None
        self._is_producing_done = False  # nothing more will enter the queue
        self.cloud_end: End | None = None
        self.fallback: str | None = None
        self.handoff_index: int | None = None
        self.end_reason = "max_tokens"
        self.trace: list[tuple[float, str]] = []  # (seconds since start, what happened)
        # (seconds since start, the controller's T̂own then, tokens left): one per token shown
        # before the device's own, to check the estimate against when its first token came.
        self.pacing_trace: list[tuple[float, float, int]] = []
        self.result: GenerationResult | None = None
        self._t0 = 0.0

    # -- the display loop -----------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[DisplayedToken]:
        self._t0 = time.monotonic()
        reader = asyncio.create_task(self._read_cloud()) if self._cloud_open else None
        if self.mode is not Mode.CLOUD:  # cloud-only starts the device only if the cloud fails
            self._start_device()
        try:
            async for tok in self._display():
                yield tok
        finally:
            await self._stop_device()
            await self._close_cloud(reader)
        self.result = self._result()
        if self._on_done is not None:
            self._on_done(self)

    async def _display(self) -> AsyncIterator[DisplayedToken]:
        while len(self.tokens) < self.request.max_tokens:
            if not self._queue and (self._is_producing_done or self._is_cloud_answer_done()):
                self.end_reason = "eos"
                return
            now = time.monotonic()
            decision = self.controller.decide(
                now, len(self._queue), self._num_left(), self._progress(), self._cloud_pace()
            )
            if decision.action is Action.SHOW:
                token_id, source = self._queue.popleft()
                if source == "cloud" and self.mode is Mode.PD:
                    own = self.controller.estimate_own_token(now, self._progress())
                    self.pacing_trace.append((now - self._t0, own - self._t0, self._num_left()))
                if token_id in self._lm.eos_token_ids:
                    self.end_reason = "eos"
                    return
                yield self._show(token_id, source, now)
                continue
            self._wake.clear()
            timeout = None if math.isinf(decision.wait_s) else decision.wait_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _show(self, token_id: int, source: Source, now: float) -> DisplayedToken:
        text = self._detok.push(token_id)
        tok = DisplayedToken(len(self.tokens), token_id, text, source, now - self._t0)
        self.tokens.append(tok)
        self.controller.on_shown(now)
        return tok

    def _progress(self):
        if self.mode is Mode.CLOUD and self.fallback is None:
            return self.session.progress(is_decoding=True)  # nothing to wait for: show on arrival
        # Decoding starts when the received tokens are absorbed, not at the handoff: that absorb
        # takes about a second at 2k tokens, and counting it as done drained the buffer (a 1.4 s
        # stall measured at the handoff).
        to_absorb = len(self._received) - self.session.absorbed
        is_decoding = self.handoff_index is not None and to_absorb <= 0
        return self.session.progress(max(to_absorb, 0), is_decoding)

    def _cloud_pace(self) -> float | None:
        """Seconds per cloud token so far (first to latest received); None before two."""
        if len(self._received) < 2:
            return None
        first, latest = self._received_span
        return (latest - first) / (len(self._received) - 1)

    def _num_left(self) -> int:
        """Tokens to show before the device's own: queued plus cloud tokens still due."""
        due = 0
        if self._cloud_open and self.handoff_index is None:
            budget = min(1 + self.request.cloud_tokens, self.request.max_tokens)
            due = max(0, budget - len(self._received))
        return len(self._queue) + due

    def _is_cloud_answer_done(self) -> bool:
        """The cloud alone produced the whole answer (EOS, or max_tokens reached)."""
        if self.handoff_index is not None:
            return False
        eos = self._lm.eos_token_ids
        return any(t in eos for t in self._received) or (
            len(self._received) >= self.request.max_tokens
            or (self.cloud_end is not None and self.cloud_end.reason is EndReason.EOS)
        )

    def _note(self, what: str) -> None:
        self.trace.append((time.monotonic() - self._t0, what))

    # -- the device worker ----------------------------------------------------------------------

    def _start_device(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._device_worker())

    async def _stop_device(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _device_worker(self) -> None:
        run = asyncio.get_running_loop().run_in_executor
        session = self.session
        while not session.is_prompt_done:
            if self._is_cloud_answer_done():
                return  # the cloud already gave the whole answer: spare the device
            await run(self._executor, session.prefill_chunk)
            self._wake.set()
        if self._is_cloud_answer_done():
            return
        received = self._hand_off()
        chunk = self.config.prefill_chunk_tokens
        for start in range(0, len(received), chunk):
            await run(self._executor, session.absorb, received[start : start + chunk])
        self._note("absorbed")
        await self._decode_locally()

    def _hand_off(self) -> list[int]:
        """Take over at m = cloud tokens received now; stop the cloud; return those tokens."""
        m = len(self._received)
        self.handoff_index = m
        self._note(f"handoff at {m}")
        if self._stream is not None and self._cloud_open:
            self._handoff_task = asyncio.create_task(self._send_handoff(m))
        return list(self._received)

    async def _send_handoff(self, at_index: int) -> None:
        with contextlib.suppress(Exception):  # a lost handoff only costs the cloud its budget
            await self._stream.handoff(at_index)

    async def _decode_locally(self) -> None:
        run = asyncio.get_running_loop().run_in_executor
        session, sampling = self.session, self.request.sampling
        try:
            while session.absorbed < self.request.max_tokens:
                token_id = session.next_token(sampling)
                self._queue.append((token_id, "device"))
                self._wake.set()
                if token_id in self._lm.eos_token_ids:
                    return
                if session.absorbed + 1 < self.request.max_tokens:
                    await run(self._executor, session.absorb, [token_id])
                else:
                    return
        finally:
            self._is_producing_done = True
            self._wake.set()

    # -- the cloud reader -----------------------------------------------------------------------

    async def _read_cloud(self) -> None:
        cfg = self.config
        timeout = cfg.first_token_timeout_s
        try:
            self._stream = await asyncio.wait_for(open_stream(self.request, cfg), timeout)
            if self.handoff_index is not None:
                return  # the device took over while we were connecting: closing cancels it
            events = aiter(self._stream.events())
            while True:
                timeout = cfg.stall_timeout_s if self._received else cfg.first_token_timeout_s
                if self._on_event(await asyncio.wait_for(anext(events), timeout)):
                    break
                self._wake.set()
        except StopAsyncIteration:
            self._cloud_failed("the cloud closed the stream without an end event")
        except TimeoutError:
            self._cloud_failed(f"the cloud was silent for more than {timeout:g} s")
        except PDError as err:
            self._cloud_failed(f"{err.code}: {err.message}")
        except Exception as err:  # a broken link must never break the answer
            self._cloud_failed(f"cloud stream failed: {err!r}")
        finally:
            self._cloud_open = False
            self._wake.set()

    def _on_event(self, event) -> bool:
        """Handle one cloud event; True when the stream is over."""
        if isinstance(event, KeepSet):
            if event.is_available:
                self.session.apply_keep_set(event.kept_positions)
            self._note(f"keep-set: {len(event.kept_positions)} kept ({event.reason})")
        elif isinstance(event, FirstToken | Token):
            index = 0 if isinstance(event, FirstToken) else event.index
            if index != self._next_cloud_index:
                raise PDError(f"cloud sent token {index}, expected {self._next_cloud_index}")
            # Counted apart from ``_received``: past the handoff tokens are dropped, and checking
            # against len(_received) broke the stream at the second dropped token (no End, so no
            # usage report: a test flaked on it about one run in four).
            self._next_cloud_index += 1
            if self.handoff_index is None:  # past the handoff, cloud tokens are dropped
                now = time.monotonic()
                self._received_span = (self._received_span[0] if self._received else now, now)
                self._received.append(event.token_id)
                self._queue.append((event.token_id, "cloud"))
        else:
            self.cloud_end = event
            if event.reason is EndReason.ERROR:
                self._cloud_failed(f"cloud error: {event.message}")
            return True
        return False

    def _cloud_failed(self, reason: str) -> None:
        if self._is_cloud_answer_done() or (self.handoff_index and self._stream is not None):
            return  # the cloud delivered its part; a failure after the handoff costs nothing
        self.fallback = reason
        self._note(f"fallback: {reason}")
        self._start_device()  # cloud-only: the device finishes the answer

    async def _close_cloud(self, reader: asyncio.Task | None) -> None:
        if reader is not None and not reader.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(reader), _END_EVENT_GRACE_S)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.aclose()

    def _result(self) -> GenerationResult:
        usage = self.cloud_end.usage if self.cloud_end else None
        return GenerationResult(
            mode=self.mode,
            tokens=list(self.tokens),
            prompt_tokens=self.session.prompt_len,
            kept_prompt_tokens=self.session.prompt_total,
            handoff_index=self.handoff_index if self.mode is Mode.PD else None,
            cloud_tokens=usage.completion_tokens if usage else len(self._received),
            cloud_busy_s=usage.busy_s if usage else None,
            fallback=self.fallback,
            end_reason=self.end_reason,
            cached_prompt_tokens=self.session.num_cached,
        )
