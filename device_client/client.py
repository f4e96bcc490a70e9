"""The device SDK: ``DeviceClient.generate`` / ``stream`` and their async twins.

    client = DeviceClient("http://127.0.0.1:8000")          # or "grpc://...", or None
    for tok in client.stream("Why is the sky blue?", max_tokens=64):
        print(tok.text, end="", flush=True)

One async path (``answer``); the sync methods drive it on a private event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError

from common.errors import InvalidRequest
from common.messages import ChatMessage, GenerateRequest, SamplingParams
from common.model import DEFAULT_MODEL, LoadedModel, load_model
from common.platform import select_platform, set_threads
from common.wire import validation_message

from .answer import Answer, CloudOpener
from .config import ClientConfig
from .local_runtime import KVPrefix, LocalSession, measure_forwards
from .self_profile import SelfProfile, untuned_plan
from .session import Session, SessionPool
from .speed_controller import PacingConfig
from .transports import open_stream
from .types import DEFAULT_MAX_TOKENS, DisplayedToken, GenerationResult, Mode

_SHOW_ON_ARRIVAL = PacingConfig(min_interval_s=0.0, max_interval_s=0.0, decode_interval_s=0.0)


class DeviceClient:
    def __init__(
        self,
        cloud: str | None = None,
        model: str | LoadedModel = DEFAULT_MODEL,
        transport: str | None = None,
        *,
        open_cloud: CloudOpener = open_stream,
        **options,
    ) -> None:
        """``options`` are any other ``ClientConfig`` fields (threads, settings, network, ...);
        ``open_cloud`` opens a cloud stream (default: HTTP or gRPC; tests pass a fake cloud)."""
        name = model if isinstance(model, str) else model.name
        self.config = ClientConfig(cloud_url=cloud, transport=transport, model=name, **options)
        if isinstance(model, LoadedModel):
            self.model = model
        else:
            set_threads(self.config.threads)
            self.model = load_model(model, select_platform(self.config.device))
        self._open_cloud = open_cloud
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdd-device")
        self._loop: asyncio.AbstractEventLoop | None = None  # for the sync API only
        self._sessions = SessionPool(self)
        self.self_profile = SelfProfile()  # this device's speed, learnt from its forwards
        if self.config.cloud_url is not None and self.config.warm_up:
            self.warm_up()

    @property
    def decode_s_estimate(self) -> float | None:
        """τ̂d, learnt from this device's warm-up and answers."""
        return self.self_profile.decode_s

    def warm_up(self) -> None:
        """Time a short prefill and two decode steps (at the emulated speed), so the first pd
        answer is planned and paced with this device's speed (``self_profile``)."""
        session = measure_forwards(self.model, self.config.device_slowdown)
        self.self_profile.observe(session.forwards, session.decode_s)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
        self._executor.shutdown(wait=False)

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _sync_loop(self) -> asyncio.AbstractEventLoop:
        """One event loop per client for the sync API, made on first use and reused by each call."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def build_request(
        self,
        prompt: str | None = None,
        *,
        prompt_ids: list[int] | None = None,
        messages: list[dict] | None = None,
        raw: bool = False,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        mode: Mode | str = Mode.PD,
        cloud_tokens: int | None = None,
        refine_ratio: float | None = None,
        sampling: SamplingParams | None = None,
        num_device_cached: int = 0,
    ) -> tuple[GenerateRequest, Mode, PacingConfig]:
        """Tokenize, pick the settings bucket, validate: everything before any network or model.

        ``num_device_cached``: leading prompt tokens a session's cache holds; the bucket is chosen
        by the tokens left to prefill, and the cloud is told the count."""
        mode = Mode(mode)
        if prompt_ids is None:
            if prompt is None and messages is None:
                raise InvalidRequest("give a prompt, prompt_ids or messages")
            if prompt is not None and not prompt.strip():
                raise InvalidRequest("prompt is empty: send some text")
            prompt_ids = self.model.encode(prompt, messages, raw)
        if len(prompt_ids) + max_tokens > self.model.max_context:
            raise InvalidRequest(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the "
                f"model's context of {self.model.max_context} tokens"
            )
        profile = self.self_profile.profile(len(prompt_ids))
        prefill = profile.prefill if profile is not None else None
        bucket = self.config.settings.bucket_for(len(prompt_ids), num_device_cached, prefill)
        if mode is Mode.PD and (not bucket.use_cloud or self.config.cloud_url is None):
            mode = Mode.DEVICE  # the settings say the device alone is best for this length
        elif mode is Mode.PD and not bucket.use_device:
            mode = Mode.CLOUD  # the settings say this device is too slow to take over
        if mode is Mode.CLOUD:
            cloud_tokens = max_tokens - 1  # the cloud streams the whole answer
        ratio = bucket.refine_ratio if refine_ratio is None else refine_ratio
        pacing, planned_n = _SHOW_ON_ARRIVAL, bucket.cloud_tokens
        if mode is Mode.PD and bucket.untuned and profile is not None:
            # No settings file: N and the pacing by the tuner's rule, from this device's speed.
            jitter_s = self.config.network.jitter_ms / 1000
            planned_n, pacing = untuned_plan(
                profile, len(prompt_ids), max_tokens, max(ratio, 0.0), jitter_s
            )
        elif mode is Mode.PD:
            # Δmin follows the device's own measured rhythm so it does not change at the handoff.
            tau_d = max(bucket.min_interval_s, self.decode_s_estimate or 0.0)
            rate = None
            if profile is not None:
                rate = len(prompt_ids) / max(profile.prefill.time(len(prompt_ids)), 1e-9)
            pacing = PacingConfig(
                min_interval_s=min(tau_d, bucket.max_interval_s),
                max_interval_s=bucket.max_interval_s,
                decode_interval_s=tau_d,
                prefill_rate_tok_s=rate,
            )
        try:
            request = GenerateRequest(
                prompt_ids=prompt_ids,
                max_tokens=max_tokens,
                cloud_tokens=planned_n if cloud_tokens is None else cloud_tokens,
                refine_ratio=ratio,
                sampling=sampling or SamplingParams(),
                fingerprint=self.model.fingerprint,
                num_device_cached_tokens=num_device_cached,
            )
        except ValidationError as err:
            raise InvalidRequest(validation_message(err)) from None
        return request, mode, pacing

    def _observe(self, answer: Answer) -> None:
        """Online correction: learn the device's speed from each answer's forwards."""
        session = answer.session
        self.self_profile.observe(getattr(session, "forwards", []), session.decode_s)

    def answer(
        self, prompt: str | None = None, *, prefix: KVPrefix | None = None, **kwargs
    ) -> Answer:
        """An answer to iterate (``async for tok in answer``); ``answer.result`` afterwards.

        ``prefix``: a session's cache of the first prompt tokens (see ``session``)."""
        num_cached = len(prefix) if prefix is not None else 0
        request, mode, pacing = self.build_request(prompt, num_device_cached=num_cached, **kwargs)
        if mode is not Mode.DEVICE and self.config.cloud_url is None:
            raise InvalidRequest(f"mode {mode.value!r} needs a cloud URL")
        return Answer(
            self.model,
            request,
            mode,
            pacing,
            self.config,
            self._executor,
            session=LocalSession(
                self.model,
                request.prompt_ids,
                self.config.prefill_chunk_tokens,
                self.config.device_slowdown,
                prefix=prefix,
            ),
            open_cloud=self._open_cloud,
            on_done=self._observe,
        )

    def session(self, system: str | None = None) -> Session:
        """A conversation that keeps its token ids and this device's KV cache between turns.

        The client keeps the caches of its ``max_sessions`` most recently used sessions; an
        older session keeps its ids and prefills its history again on its next turn."""
        return self._sessions.open(system)

    async def astream(self, prompt: str | None = None, **kwargs) -> AsyncIterator[DisplayedToken]:
        async for tok in self.answer(prompt, **kwargs):
            yield tok

    async def agenerate(self, prompt: str | None = None, **kwargs) -> GenerationResult:
        answer = self.answer(prompt, **kwargs)
        async for _ in answer:
            pass
        assert answer.result is not None
        return answer.result

    def stream(self, prompt: str | None = None, **kwargs) -> Iterator[DisplayedToken]:
        yield from self.stream_answer(self.answer(prompt, **kwargs))

    def stream_answer(self, answer: Answer) -> Iterator[DisplayedToken]:
        """Iterate an ``answer`` from sync code; ``answer.result`` is set afterwards."""
        agen = aiter(answer)
        loop = self._sync_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(agen.aclose())

    def generate(self, prompt: str | None = None, **kwargs) -> GenerationResult:
        return self._sync_loop().run_until_complete(self.agenerate(prompt, **kwargs))


__all__ = ["DeviceClient", "ChatMessage"]
