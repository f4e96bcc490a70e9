"""The cloud engine on vLLM: the pd protocol over vLLM's async engine (``AsyncLLM``), in-process.

The same ``CloudEngine`` surface as the builtin engine (``submit`` -> ``RequestStream``,
``handoff``, ``close``/``stop``, ``num_active``, ``metrics``), so the HTTP, gRPC and OpenAI front
ends do not change. What stays ours, above vLLM:
- **Admission.** At most ``max_concurrent_requests + max_queue`` requests are in vLLM at once
  (vLLM runs ``max_num_seqs = max_concurrent_requests`` of them); one more is refused at once
  with ``Overloaded`` (429 / RESOURCE_EXHAUSTED, Retry-After). vLLM never holds an unbounded queue.
- **Budget.** vLLM's ``max_tokens`` is the first token plus N; EOS is the model's own eos ids.
- **Stop.** A handoff or a disconnect cancels the request's driver task; cancelling vLLM's
  ``generate`` aborts the request in the engine core, which drops it before its next step.
- **Sampling.** Greedy rows are vLLM's argmax; seeded rows are drawn by our own per-index sampler
  inside vLLM (``vllm_sampler.PdSampler``), so the device continues the same random stream
  (``vllm_params.py``: the request's vLLM parameters, penalties, logprobs). A row whose sampling
  fails ends alone with an error; the batch goes on.
- **Refinement.** vLLM exposes no attention scores: a ``refine_ratio > 0`` request gets a keep-set
  event saying so (``is_available=False``) and the device prefills its whole prompt.

Why in-process and not in front of a vLLM server: the front ends keep their own admission, keys
and wire format either way, and a second server adds an HTTP hop, a second tokenizer pass and a
second detokenization per token; abort is a direct call here. vLLM's own OpenAI server runs the
same ``AsyncLLM`` (with its engine core in a child process, as here).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import uuid
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace

from common.clock import Clock, MonotonicClock
from common.detokenize import Detokenizer
from common.errors import CloudUnavailable, InvalidRequest, Overloaded, PDError, UnknownRequest
from common.messages import End, EndReason, GenerateRequest, KeepSet, Usage
from common.platform import set_threads

from .config import ServerConfig
from .engine_api import EngineExtras, Event
from .metrics import Metrics
from .sequence import Mailbox, RequestKey, Sequence
from .validation import check_request, max_new_tokens_for, prompt_ids_for
from .vllm_model import ServedModel, load_served_model
from .vllm_params import prompt_logprobs, sampling_params_for, token_logprob
from .vllm_sampler import FAULT_DIR_ENV, QUALNAME, fault_path

log = logging.getLogger(__name__)

NO_SCORES = "the vllm engine cannot score prompts; prefill the whole prompt"
_REDUCE_OP = "`torch.distributed.reduce_op` is deprecated"


class VllmMetrics(Metrics):
    """Our ``pdd_*`` metrics, followed by vLLM's own (``vllm:*``, in the default registry)."""

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import REGISTRY, generate_latest

        ours, content_type = super().render()
        return ours + generate_latest(REGISTRY), content_type


class VllmRequestStream:
    """One admitted request's events, ending with ``End``. ``cancel()`` on disconnect."""

    def __init__(self, engine: VllmEngine, running: _Running) -> None:
        self._engine = engine
        self._running = running
        self.is_done = False

    @property
    def request_id(self) -> str:
        return self._running.seq.request_id

    def __aiter__(self) -> VllmRequestStream:
        return self

    async def __anext__(self) -> Event:
        if self.is_done:
            raise StopAsyncIteration
        event = await self._running.seq.mailbox.get()
        self.is_done = isinstance(event, End)
        return event

    def cancel(self, message: str = "client disconnected") -> None:
        if not self.is_done:
            self._running.stop(EndReason.CANCELLED, message)


@dataclass(eq=False)
class _Running:
    seq: Sequence
    engine_id: str  # the id inside vLLM: unique even when two owners reuse a request id
    extras: EngineExtras | None = None  # OpenAI routes: penalties, ignore_eos
    task: asyncio.Task | None = None
    is_finished: bool = False
    num_dropped: int = 0  # tokens vLLM delivered after a stop was asked (not sent on)

    def stop(self, reason: EndReason, message: str) -> None:
        """Ask once: a second cancel could interrupt vLLM's abort of the first."""
        if self.seq.stop_reason is not None or self.is_finished:
            return
        self.seq.request_stop(reason, message)
        if self.task is not None:
            self.task.cancel()  # cancelling vLLM's generate() aborts the request in vLLM


class VllmEngine:
    can_score_prompts = False
    extra_params = EngineExtras.names()  # OpenAI route options taken here: all

    def __init__(
        self,
        served: ServedModel,
        server: ServerConfig,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.model = self.loaded = served
        self.server = server  # vLLM's options, dtype, threads and log level
        self.config = server.engine
        self.metrics = metrics or VllmMetrics()
        self._clock = clock or MonotonicClock()
        self._active: dict[RequestKey, _Running] = {}
        self._recent: OrderedDict[RequestKey, None] = OrderedDict()  # ended: late handoffs
        self._is_closed = False
        self._llm = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start vLLM (loads and compiles the model: seconds with a warm compile cache)."""
        assert self._llm is None, "engine already started"
        self._llm = start_async_llm(self.loaded, self.server)

    def close(self) -> None:
        """Refuse new requests and end the active ones with an error (does not block)."""
        if self._loop is not None and _running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self.close)
            return
        self._is_closed = True
        for running in list(self._active.values()):
            running.stop(EndReason.ERROR, "the cloud server is shutting down")

    def stop(self, timeout_s: float = 10.0) -> None:
        """``close()`` and shut vLLM's engine process down."""
        self.close()
        if self._llm is None:
            return
        handler = self._llm.output_handler
        if handler is not None and self._loop is not None:  # else it logs the dying engine
            self._loop.call_soon_threadsafe(handler.cancel)
        self._llm.shutdown(timeout=timeout_s)

    @property
    def num_active(self) -> int:
        return len(self._active)

    # ---- requests (on the event loop) ------------------------------------------------------

    def submit(
        self, request: GenerateRequest, owner: str = "", extras: EngineExtras | None = None
    ) -> VllmRequestStream:
        """Validate and admit ``request`` at once, or raise (and count) a ``PDError``.
        ``extras``: vLLM-only options of a cloud-only (OpenAI) request."""
        try:
            running = self._admit(request, owner)
            running.extras = extras
        except PDError as err:
            self.metrics.count_rejected(err.code)
            raise
        running.task = asyncio.get_running_loop().create_task(self._drive(running))
        # A task cancelled before its first step never runs its body: end the stream here.
        running.task.add_done_callback(lambda _: self._finish(running, *_stopped(running)))
        return VllmRequestStream(self, running)

    def handoff(self, request_id: str, at_index: int, owner: str = "") -> str:
        """Stop the request (vLLM abort); "finished" when it had already ended."""
        key = (owner, request_id)
        running = self._active.get(key)
        if running is None:
            if key in self._recent:
                return "finished"
            raise UnknownRequest(
                f"no request with id {request_id!r} is running on this server; "
                "send the handoff to the server that streams the request"
            )
        running.stop(EndReason.HANDOFF, f"device took over at index {at_index}")
        return "stopping"

    def _admit(self, request: GenerateRequest, owner: str) -> _Running:
        assert self._llm is not None, "start() the engine first"
        prompt_ids = prompt_ids_for(request, self.loaded)
        check_request(request, prompt_ids, self.loaded, self.config)
        if self._is_closed:
            raise CloudUnavailable("the cloud server is shutting down; finish on the device")
        key = (owner, request.request_id)
        if key in self._active:
            raise InvalidRequest(
                f"request_id {request.request_id!r} is already in use; send a fresh id"
            )
        if len(self._active) >= self.config.max_concurrent_requests + self.config.max_queue:
            raise Overloaded(
                f"all {self.config.max_concurrent_requests} request slots are busy; "
                f"retry after {self.config.retry_after_s:g} s or run the answer on the device",
                retry_after_s=self.config.retry_after_s,
            )
        self._loop = asyncio.get_running_loop()
        now = self._clock.now()
        seq = Sequence(
            request=request,
            prompt_ids=prompt_ids,
            max_new_tokens=max_new_tokens_for(request),
            mailbox=Mailbox(self._loop),
            detokenizer=Detokenizer(self.loaded.tokenizer),
            arrival_s=now,
            owner=owner,
            admitted_s=now,
        )
        running = _Running(seq, engine_id=uuid.uuid4().hex)
        self._active[seq.key] = running
        self.metrics.active.set(len(self._active))
        return running

    async def _drive(self, running: _Running) -> None:
        """Feed vLLM's outputs into the request's mailbox until vLLM or a stop ends it."""
        seq = running.seq
        reason, message = EndReason.ERROR, ""
        try:
            if seq.request.refine_ratio > 0:
                seq.mailbox.put(KeepSet(is_available=False, reason=NO_SCORES))
            from vllm.inputs.engine import tokens_input

            prompt = tokens_input(seq.prompt_ids)
            eos_ids, key = self.loaded.eos_token_ids, running.engine_id
            params = sampling_params_for(seq, eos_ids, running.extras, fault_key=key)
            async for out in self._llm.generate(prompt, params, running.engine_id):
                self._take(running, out)
            reason = seq.natural_end(self.loaded.eos_token_ids) or EndReason.BUDGET
            if (fault := _take_fault(running.engine_id)) is not None:
                reason, message = EndReason.ERROR, fault
        except asyncio.CancelledError:  # handoff, disconnect or shutdown (their reason wins)
            reason, message = seq.stop_reason or EndReason.CANCELLED, seq.stop_message
        except Exception as err:  # a vLLM failure ends this request, never the server
            log.exception("vLLM failed request %s", seq.request_id)
            message = f"cloud model error: {type(err).__name__}: {err}"
        self._finish(running, reason, message)

    def _take(self, running: _Running, out) -> None:
        """One vLLM output (a delta of new token ids) as our token events."""
        seq, request, completion = running.seq, running.seq.request, out.outputs[0]
        if seq.prefill_end_s is None:
            self._mark_first_token(seq, out)
            if request.prompt_logprobs is not None and out.prompt_logprobs is not None:
                positions = list(out.prompt_logprobs)
                seq.prompt_logprobs = prompt_logprobs(
                    positions, seq.prompt_ids, request.prompt_logprobs
                )
        positions = list(completion.logprobs or [])
        for i, token_id in enumerate(completion.token_ids):
            if seq.stop_reason is not None:  # past a handoff: the device drops these anyway
                running.num_dropped += 1
                continue
            if request.logprobs is not None and i < len(positions):
                seq.next_logprob = token_logprob(positions[i], int(token_id), request.logprobs)
            seq.mailbox.put(seq.append_token(int(token_id)))

    def _mark_first_token(self, seq: Sequence, out) -> None:
        """Queue and prefill times from vLLM's engine-core timestamps (same monotonic clock)."""
        now = self._clock.now()
        stats = getattr(out, "metrics", None)
        scheduled = getattr(stats, "scheduled_ts", 0.0) or 0.0
        first = getattr(stats, "first_token_ts", 0.0) or 0.0
        is_ours = isinstance(self._clock, MonotonicClock) and seq.arrival_s <= scheduled <= now
        seq.prefill_start_s = scheduled if is_ours else seq.arrival_s
        seq.prefill_end_s = first if is_ours and scheduled <= first <= now else now
        self.metrics.observe_first_token(
            ttft_s=now - seq.arrival_s, queue_s=seq.queue_s, prefill_s=seq.prefill_s
        )

    def _finish(self, running: _Running, reason: EndReason, msg: str) -> None:
        if running.is_finished:
            return
        running.is_finished = True
        seq = running.seq
        self._active.pop(seq.key, None)
        self._recent[seq.key] = None
        while len(self._recent) > self.config.num_recent_ids:
            self._recent.popitem(last=False)
        self.metrics.active.set(len(self._active))
        busy_s = self._clock.now() - (seq.admitted_s or seq.arrival_s)
        num_generated = seq.num_tokens + running.num_dropped
        usage = Usage(
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=num_generated,
            queue_s=seq.queue_s,
            prefill_s=seq.prefill_s,
            busy_s=busy_s,
        )
        seq.mailbox.put(End(reason=reason, usage=usage, message=msg))
        self.metrics.observe_end(reason.value, num_generated, busy_s)


def _take_fault(key: str) -> str | None:
    """The error PdSampler wrote for this request (then it forced the row's stop), if any."""
    path = fault_path(key)
    if path is None or not path.exists():
        return None
    message = path.read_text()
    path.unlink(missing_ok=True)
    return message


def _stopped(running: _Running) -> tuple[EndReason, str]:
    return running.seq.stop_reason or EndReason.CANCELLED, running.seq.stop_message


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def start_async_llm(served: ServedModel, server: ServerConfig):
    """vLLM's ``AsyncLLM`` for ``served`` with our sampler; its engine core is a child process."""
    options = server.vllm
    configure_vllm_processes(server)
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(
        model=str(served.path),
        dtype=server.dtype,
        max_model_len=served.max_context,
        max_num_seqs=server.engine.max_concurrent_requests,
        enable_prefix_caching=server.engine.prefix_cache_bytes > 0,  # --prefix-cache-mb 0: off
        enforce_eager=options.enforce_eager,
        gpu_memory_utilization=options.gpu_memory_utilization,
        logits_processors=[QUALNAME],
        disable_log_stats=False,  # vLLM's Prometheus metrics, exported on /metrics
    )
    return AsyncLLM.from_engine_args(args)


def configure_vllm_processes(server: ServerConfig) -> None:
    """Settings vLLM reads in this process and its engine processes; an operator's own win."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", server.log_level.upper())
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # do not pin shared cores
    if FAULT_DIR_ENV not in os.environ:  # where PdSampler reports a failed row (vllm_sampler)
        os.environ[FAULT_DIR_ENV] = tempfile.mkdtemp(prefix="pdd-vllm-faults-")
    if server.vllm.kv_cache_gib:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(server.vllm.kv_cache_gib))
    if server.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(server.threads))
    # vLLM 0.32 touches a deprecated torch alias on import, in every process it starts.
    os.environ.setdefault("PYTHONWARNINGS", f"ignore:{_REDUCE_OP}:FutureWarning")
    warnings.filterwarnings("ignore", message=re.escape(_REDUCE_OP), category=FutureWarning)


def build_vllm_engine(config: ServerConfig) -> VllmEngine:
    """``pdd serve --engine vllm``: the model's tokenizer and fingerprint here, weights in vLLM."""
    configure_vllm_processes(config)
    from vllm.platforms import current_platform

    set_threads(config.threads)
    served = load_served_model(config.model, f"vllm-{current_platform.device_type}")
    if config.vllm.max_model_len:
        served = replace(served, max_context=min(served.max_context, config.vllm.max_model_len))
    log.info("model %s served by vLLM (fingerprint %s)", served.name, served.fingerprint)
    return VllmEngine(served, config)
