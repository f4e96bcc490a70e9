"""One answer, end to end on the device: pd, device-only and cloud-only share this loop.

Three thin tasks around one ``AnswerState`` (``answer_state.py``, where the rules live):
- the cloud reader opens the stream and feeds each cloud event to the state;
- the device worker prefills the (kept) prompt in chunks; when it is done it hands off at
  m = the cloud tokens received so far, absorbs them in one forward, and decodes on;
- the display loop shows what the state says to show, at the pace its ``SpeedController`` sets.

Nothing the cloud or the device runtime does may break or hang the answer: a cloud failure is a
``fallback``, a device failure ends the answer after what could still be shown
(``end_reason="error"``, ``device_error`` says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from functools import partial

from common.detokenize import Detokenizer
from common.errors import PDError
from common.messages import GenerateRequest
from common.model import LoadedModel

from .answer_state import AnswerSpec, AnswerState, Step, StepKind
from .config import ClientConfig
from .local_runtime import LocalSession
from .speed_controller import PacingConfig
from .transports import CloudStream, open_stream
from .types import DisplayedToken, GenerationResult, Mode

_END_EVENT_GRACE_S = 1.0  # after the answer, how long to wait for the cloud's usage report

CloudOpener = Callable[[GenerateRequest, ClientConfig], Awaitable[CloudStream]]


def vocab_size(lm: LoadedModel) -> int:
    """Token ids the device can embed and decode."""
    return min(lm.model.get_input_embeddings().num_embeddings, len(lm.tokenizer))


class Answer:
    def __init__(
        self,
        lm: LoadedModel,
        request: GenerateRequest,
        mode: Mode,
        pacing: PacingConfig,
        config: ClientConfig,
        executor: Executor,
        *,
        session: LocalSession | None = None,
        open_cloud: CloudOpener = open_stream,
        clock: Callable[[], float] = time.monotonic,
        on_done: Callable[[Answer], None] | None = None,
    ) -> None:
        """``session``: the device runtime for this answer (default: a new ``LocalSession``);
        ``open_cloud``: how to reach the cloud; ``clock``: the event loop's time scale."""
        self.request, self.mode, self.config = request, mode, config
        if session is None:
            chunk, slowdown = config.prefill_chunk_tokens, config.device_slowdown
            session = LocalSession(lm, request.prompt_ids, chunk, slowdown)
        self.session = session
        spec = AnswerSpec.of(request, vocab_size(lm), lm.eos_token_ids)
        self.state = AnswerState(spec, mode, pacing, self.session, clock)
        self._executor, self._open_cloud, self._clock = executor, open_cloud, clock
        self._on_done = on_done
        self._detok = Detokenizer(lm.tokenizer)
        self.tokens: list[DisplayedToken] = []
        self._wake = asyncio.Event()  # the display loop: something changed
        self._stream: CloudStream | None = None
        self._handoff_task: asyncio.Task | None = None
        self._worker: asyncio.Task | None = None
        self._is_closing = False  # the display ended: start nothing more
        self.result: GenerationResult | None = None

    @property
    def trace(self) -> list[tuple[float, str]]:
        """(seconds since start, what happened): handoff, absorb, keep-set, fallback."""
        return self.state.notes

    @property
    def pacing_trace(self) -> list[tuple[float, float, int]]:
        """(seconds since start, the controller's T̂own then, tokens left) per cloud token shown."""
        return self.state.pacing_trace

    # -- the display loop -----------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[DisplayedToken]:
        self.state.start()
        reader = asyncio.create_task(self._read_cloud()) if self.state.is_cloud_open else None
        if self.state.is_device_needed:  # cloud-only starts the device only if the cloud fails
            self._start_device()
        try:
            async for tok in self._display():
                yield tok
        finally:
            self._is_closing = True
            await self._stop_device()
            await self._close_cloud(reader)
        self.result = self._result()
        if self._on_done is not None:
            self._on_done(self)

    async def _display(self) -> AsyncIterator[DisplayedToken]:
        while (step := self.state.next_step()).kind is not StepKind.END:
            if step.kind is StepKind.SHOW:
                yield self._show(step)
                continue
            self._wake.clear()
            timeout = None if math.isinf(step.wait_s) else step.wait_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _show(self, step: Step) -> DisplayedToken:
        text = self._detok.push(step.token_id)
        now = self._clock() - self.state.started_at
        tok = DisplayedToken(len(self.tokens), step.token_id, text, step.source, now)
        self.tokens.append(tok)
        return tok

    # -- the device worker ----------------------------------------------------------------------

    def _start_device(self) -> None:
        if self._worker is None and not self._is_closing:
            self._worker = asyncio.create_task(self._device_worker())

    async def _stop_device(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _device_worker(self) -> None:
        try:
            await self._catch_up_and_decode()
        except Exception as err:  # a failing device ends the answer; it must never hang it
            self.state.on_device_failed(f"device runtime failed: {err!r}")
        finally:
            self.state.on_device_done()
            self._wake.set()

    async def _catch_up_and_decode(self) -> None:
        run = partial(asyncio.get_running_loop().run_in_executor, self._executor)
        session, state = self.session, self.state
        while not session.is_prompt_done:
            if state.is_cloud_answer_done:
                return  # the cloud already gave the whole answer: spare the device
            await run(session.prefill_chunk)
            self._wake.set()
        if state.is_cloud_answer_done:
            return
        received = state.hand_off()
        if self._stream is not None and state.is_cloud_open:
            handoff = self._send_handoff(self._stream, len(received))
            self._handoff_task = asyncio.create_task(handoff)
        chunk = self.config.prefill_chunk_tokens
        for start in range(0, len(received), chunk):
            part = received[start : start + chunk]
            await run(session.absorb, part)
            state.on_absorbed(len(part))
        state.note("absorbed")
        while True:
            token_id = session.next_token(self.request.sampling)
            more = state.on_device_token(token_id)
            self._wake.set()
            if not more:
                return
            await run(session.absorb, [token_id])

    async def _send_handoff(self, stream: CloudStream, at_index: int) -> None:
        with contextlib.suppress(Exception):  # a lost handoff only costs the cloud its budget
            await stream.handoff(at_index)

    # -- the cloud reader -----------------------------------------------------------------------

    async def _read_cloud(self) -> None:
        cfg, state = self.config, self.state
        try:
            await self._read_events()
        except StopAsyncIteration:
            state.on_cloud_failed("the cloud closed the stream without an end event")
        except TimeoutError:
            timeout = cfg.stall_timeout_s if state.received else cfg.first_token_timeout_s
            state.on_cloud_failed(f"the cloud was silent for more than {timeout:g} s")
        except PDError as err:
            state.on_cloud_failed(f"{err.code}: {err.message}")
        except Exception as err:  # a broken link must never break the answer
            state.on_cloud_failed(f"cloud stream failed: {err!r}")
        state.on_cloud_closed()
        self._wake.set()
        if state.is_device_needed:
            self._start_device()  # cloud-only: the device finishes the answer
        if state.fallback is not None or state.handoff_index == 0:
            await self._close_stream()  # the cloud is of no more use: cancel it now

    async def _read_events(self) -> None:
        """Open the stream and feed its events to the state until it ends."""
        cfg, state = self.config, self.state
        opened = self._open_cloud(self.request, cfg)
        self._stream = await asyncio.wait_for(opened, cfg.first_token_timeout_s)
        state.on_cloud_connected()
        if state.handoff_index is not None:
            return  # the device took over while we were connecting
        events = aiter(self._stream.events())
        while True:
            timeout = cfg.stall_timeout_s if state.received else cfg.first_token_timeout_s
            is_over = state.on_cloud_event(await asyncio.wait_for(anext(events), timeout))
            self._wake.set()
            if is_over:
                return

    async def _close_cloud(self, reader: asyncio.Task | None) -> None:
        if reader is not None and not reader.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(reader), _END_EVENT_GRACE_S)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await self._close_stream()

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.aclose()

    def _result(self) -> GenerationResult:
        state = self.state
        usage = state.cloud_end.usage if state.cloud_end else None
        return GenerationResult(
            mode=self.mode,
            tokens=list(self.tokens),
            prompt_tokens=self.session.prompt_len,
            kept_prompt_tokens=self.session.prompt_total,
            handoff_index=state.handoff_index if self.mode is Mode.PD else None,
            cloud_tokens=usage.completion_tokens if usage else len(state.received),
            cloud_busy_s=usage.busy_s if usage else None,
            fallback=state.fallback,
            end_reason=state.end_reason or "max_tokens",
            first_token_source=state.first_token_source,
            cloud_unused_reason=state.cloud_unused_reason,
            keep_set_note=state.keep_set_note,
            device_error=state.device_error,
            cached_prompt_tokens=self.session.num_cached,
            cloud_cached_tokens=usage.cached_tokens if usage else None,
        )
