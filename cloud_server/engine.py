"""The cloud engine: one worker thread owns the model; each step is schedule -> run -> postprocess.

Implements ``engine_api.CloudEngine``. Handlers call ``submit`` (validates and admits at once, or
raises a typed error) and then only await the returned stream; ``handoff`` and the stream's
``cancel`` ask a request to stop, which the worker honours at its next step, so the cloud stops
within one decode step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator

from common.clock import Clock, MonotonicClock
from common.detokenize import Detokenizer
from common.errors import CloudUnavailable, InvalidRequest, PDError, UnknownRequest
from common.messages import End, EndReason, GenerateRequest, KeepSet, Usage
from common.model import LoadedModel

from .config import EngineConfig
from .engine_api import EngineExtras, Event
from .metrics import Metrics
from .model_runner import ModelRunner, SeqOutput
from .scheduler import Scheduler, SequenceStatus, Step, StepKind
from .sequence import Mailbox, RequestKey, Sequence
from .validation import check_request, max_new_tokens_for, prompt_ids_for

log = logging.getLogger(__name__)


class SequenceStream:
    """One admitted request's events, ending with ``End`` (the ``engine_api.RequestStream``)."""

    def __init__(self, engine: Engine, seq: Sequence) -> None:
        self._engine = engine
        self._seq = seq
        self.is_done = False

    @property
    def request_id(self) -> str:
        return self._seq.request_id

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self.is_done:
            raise StopAsyncIteration
        event = await self._seq.mailbox.get()
        self.is_done = isinstance(event, End)
        return event

    def cancel(self, message: str = "client disconnected") -> None:
        """Stop the request if it is still running (no-op after its ``End``)."""
        if not self.is_done:
            self._engine.request_stop(self._seq, EndReason.CANCELLED, message)


class Engine:
    """The builtin engine (transformers): implements ``engine_api.CloudEngine``."""

    can_score_prompts = True  # refinement's attention capture runs in its prefill

    def __init__(
        self,
        loaded: LoadedModel,
        config: EngineConfig | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        runner: ModelRunner | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = config or EngineConfig()
        self.metrics = metrics or Metrics()
        self.runner = runner or ModelRunner(loaded, self.config.prefix_cache_bytes)
        self.scheduler = Scheduler(self.config)
        self._clock = clock or MonotonicClock()
        self._cond = threading.Condition()
        self._recent: OrderedDict[RequestKey, None] = OrderedDict()  # ended, for late handoffs
        self._stopping: list[Sequence] = []  # asked to stop; the worker ends them next step
        self._arrived: list[Sequence] = []  # admitted since the last step: prefix not looked up
        self._is_closed = False
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, warm_up: bool = True) -> None:
        """Start the worker thread (after a warm-up forward, so the first TTFT is honest)."""
        assert self._thread is None, "engine already started"
        if warm_up:
            self.runner.warm_up()
        self._thread = threading.Thread(target=self._run, name="pdd-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Refuse new requests and end the active ones with an error (does not block)."""
        with self._cond:
            self._is_closed = True
            for seq in self.scheduler.active():
                self.request_stop(seq, EndReason.ERROR, "the cloud server is shutting down")
            self._cond.notify_all()

    def stop(self, timeout_s: float = 10.0) -> None:
        """``close()`` and wait for the worker to finish its current step."""
        self.close()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def model(self) -> LoadedModel:
        return self.loaded

    @property
    def num_active(self) -> int:
        with self._cond:
            return self.scheduler.num_active

    # ---- requests (called from the event loop thread) --------------------------------------

    extra_params = frozenset({"ignore_eos"})  # OpenAI route options taken (no penalties)

    def submit(
        self, request: GenerateRequest, owner: str = "", extras: EngineExtras | None = None
    ) -> SequenceStream:
        """Validate and admit ``request`` at once, or raise a ``PDError`` saying why not (counted
        in ``metrics.rejected``). Call from the event loop that will consume the stream.
        ``extras``: an OpenAI request's ``ignore_eos`` (the only one offered here)."""
        try:
            seq = self._admit(request, owner, extras is not None and extras.ignore_eos)
        except PDError as err:
            self.metrics.count_rejected(err.code)
            raise
        return SequenceStream(self, seq)

    def _admit(self, request: GenerateRequest, owner: str, ignore_eos: bool = False) -> Sequence:
        loop = asyncio.get_running_loop()
        prompt_ids = prompt_ids_for(request, self.loaded)
        check_request(request, prompt_ids, self.loaded, self.config)
        seq = Sequence(
            request=request,
            owner=owner,
            ignore_eos=ignore_eos,
            prompt_ids=prompt_ids,
            max_new_tokens=max_new_tokens_for(request),
            mailbox=Mailbox(loop),
            detokenizer=Detokenizer(self.loaded.tokenizer),
            arrival_s=self._clock.now(),
        )
        with self._cond:
            if self._is_closed:
                raise CloudUnavailable("the cloud server is shutting down; finish on the device")
            if self.scheduler.find(seq.key) is not None:
                raise InvalidRequest(
                    f"request_id {request.request_id!r} is already in use; send a fresh id"
                )
            self.scheduler.add(seq, seq.arrival_s)
            self._arrived.append(seq)
            self.metrics.active.set(self.scheduler.num_active)
            self._cond.notify()
        return seq

    def handoff(self, request_id: str, at_index: int, owner: str = "") -> str:
        """The device shows tokens from ``at_index`` on: stop decoding this request.

        Returns "stopping", or "finished" for a request that already ended (a late handoff is
        normal: the cloud may hit its budget while the handoff is on the wire). Another owner's
        request is answered exactly like an unknown id.
        """
        key = (owner, request_id)
        with self._cond:
            seq = self.scheduler.find(key)
            if seq is None:
                if key in self._recent:
                    return "finished"
                raise UnknownRequest(
                    f"no request with id {request_id!r} is running on this server; "
                    "send the handoff to the server that streams the request"
                )
            self.request_stop(seq, EndReason.HANDOFF, f"device took over at index {at_index}")
        return "stopping"

    def request_stop(self, seq: Sequence, reason: EndReason, message: str) -> None:
        """End ``seq`` at the worker's next step (any thread; a no-op once it has ended)."""
        with self._cond:
            if seq.request_stop(reason, message):
                self._stopping.append(seq)
                self._cond.notify()

    # ---- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self.scheduler.has_work() and not self._is_closed:
                    self._cond.wait()
                if self._is_closed and not self.scheduler.has_work():
                    return
            try:
                self.step()
            except Exception:  # a bug here must not silently stop the only model thread
                log.exception("engine step failed")

    def step(self) -> None:
        """One engine step: schedule, run the model, post-process its tokens."""
        step = self._schedule()
        outputs = self._run_model(step)
        self._postprocess(outputs)

    def _schedule(self) -> Step:
        """End the requests asked to stop, look up new prompts' cached prefixes, plan a step."""
        with self._cond:
            for seq in self._stopping:
                if seq.status is not SequenceStatus.FINISHED:  # it may have ended meanwhile
                    assert seq.stop_reason is not None
                    self._finish(seq, seq.stop_reason, seq.stop_message)
            self._stopping.clear()
            for seq in self._arrived:
                if seq.status is not SequenceStatus.FINISHED:
                    seq.num_cached = seq.num_prefilled = self.runner.attach_prefix(seq)
            self._arrived.clear()
            step = self.scheduler.schedule(self._clock.now())
        if step.kind is StepKind.PREFILL:
            self._count_prefill(step.seqs[0], *step.prefill_range)
        return step

    def _count_prefill(self, seq: Sequence, start: int, end: int) -> None:
        is_first_chunk = start == seq.num_cached  # the cached prefix needs no prefill
        if is_first_chunk:
            seq.prefill_start_s = self._clock.now()
        self.metrics.observe_prefill(end - start, seq.num_cached if is_first_chunk else 0)

    def _run_model(self, step: Step) -> list[SeqOutput]:
        try:
            if step.kind is StepKind.PREFILL:
                return [self.runner.prefill(step.seqs[0], *step.prefill_range)]
            if step.kind is StepKind.DECODE:
                return self.runner.decode(step.seqs)
        except Exception as err:  # a failed forward ends the requests in it, never the server
            return [SeqOutput(seq, error=err) for seq in step.seqs]
        return []

    def _postprocess(self, outputs: list[SeqOutput]) -> None:
        for out in outputs:
            if out.error is not None:
                self._fail(out.seq, out.error)
            elif out.token_id is not None:  # None: a prefill chunk before the last
                self._emit(out.seq, out.token_id, out.keep_set)

    def _emit(self, seq: Sequence, token_id: int, keep_set: KeepSet | None) -> None:
        if seq.num_tokens == 0:  # the first token: the prefill is done
            seq.prefill_end_s = self._clock.now()
            if keep_set is not None:
                seq.mailbox.put(keep_set)  # before the first token, as the device expects
            self.metrics.observe_first_token(
                ttft_s=seq.prefill_end_s - seq.arrival_s,
                queue_s=seq.queue_s,
                prefill_s=seq.prefill_s,
            )
        seq.mailbox.put(seq.append_token(token_id))
        reason = seq.natural_end(frozenset() if seq.ignore_eos else self.loaded.eos_token_ids)
        if reason is not None:
            self._finish(seq, reason, "")

    def _fail(self, seq: Sequence, err: Exception) -> None:
        log.error("request %s failed", seq.request_id, exc_info=err)
        self._finish(seq, EndReason.ERROR, f"cloud model error: {type(err).__name__}: {err}")

    def _finish(self, seq: Sequence, reason: EndReason, message: str) -> None:
        """The one place a request ends: slot, KV, its ``End`` event and the metrics."""
        now = self._clock.now()
        with self._cond:
            self.scheduler.finish(seq)
            self._remember(seq.key)
            self.metrics.active.set(self.scheduler.num_active)
        self.runner.release(seq)
        busy_s = now - seq.admitted_s if seq.admitted_s is not None else 0.0
        usage = Usage(
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_tokens,
            queue_s=seq.queue_s,
            prefill_s=seq.prefill_s,
            busy_s=busy_s,
            cached_tokens=seq.num_cached,
        )
        seq.mailbox.put(End(reason=reason, usage=usage, message=message))
        self.metrics.observe_end(reason.value, seq.num_tokens, busy_s)

    def _remember(self, key: RequestKey) -> None:
        self._recent[key] = None
        while len(self._recent) > self.config.num_recent_ids:
            self._recent.popitem(last=False)
