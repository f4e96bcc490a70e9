"""Per-request state in the engine, and the mailbox that carries its events to the handler."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from common.detokenize import Detokenizer
from common.messages import EndReason, FirstToken, GenerateRequest, Token, TokenLogprob

from .engine_api import Event
from .scheduler import SequenceStatus

RequestKey = tuple[str, str]  # (owner, request_id): requests of two owners never collide


class Mailbox:
    """One request's event queue: the engine thread puts, the handler's event loop gets."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        """Thread-safe; a closed loop means nobody listens any more, so the event is dropped."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def get(self) -> Event:
        return await self._queue.get()


@dataclass(eq=False)
class Sequence:
    """One request from arrival to its ``End`` event. Times are on the engine's clock."""

    request: GenerateRequest
    prompt_ids: list[int]
    max_new_tokens: int  # first token included: min(max_tokens, 1 + cloud_tokens)
    mailbox: Mailbox
    detokenizer: Detokenizer
    arrival_s: float
    owner: str = ""  # opaque, from the front end; see ``engine_api``
    ignore_eos: bool = False  # an OpenAI request's: end at max_tokens only
    status: SequenceStatus = SequenceStatus.QUEUED
    token_ids: list[int] = field(default_factory=list)
    admitted_s: float | None = None
    prefill_start_s: float | None = None
    prefill_end_s: float | None = None
    stop_reason: EndReason | None = None  # asked for by handoff / cancel / shutdown
    stop_message: str = ""
    num_prefilled: int = 0  # prompt tokens scheduled into the KV cache so far (chunked prefill)
    num_cached: int = 0  # leading prompt tokens whose KV came from the prefix cache
    next_logprob: TokenLogprob | None = None  # the next token's, when the request asks for them
    prompt_logprobs: list[TokenLogprob] | None = None  # sent with the first token when asked

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def key(self) -> RequestKey:
        return (self.owner, self.request.request_id)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def scores_prompt(self) -> bool:
        """Refinement scores the last W positions' attention over the whole prompt: those W
        are always prefilled (``scheduler.max_cached_prefix``), the keys before them may
        come from the prefix cache."""
        return self.request.refine_ratio > 0

    @property
    def num_tokens(self) -> int:
        """Answer tokens generated so far, first token included."""
        return len(self.token_ids)

    @property
    def last_token_id(self) -> int:
        return self.token_ids[-1]

    @property
    def last_position(self) -> int:
        """Position of the last generated token in the prompt + answer sequence."""
        return self.num_prompt_tokens + self.num_tokens - 1

    def request_stop(self, reason: EndReason, message: str) -> bool:
        """Ask the engine to end this request at its next step; the first reason wins (True)."""
        if self.stop_reason is not None or self.status is SequenceStatus.FINISHED:
            return False
        self.stop_reason = reason
        self.stop_message = message
        return True

    def append_token(self, token_id: int) -> Token | FirstToken:
        """Record a generated token and build its event (the first token gets its timings)."""
        self.token_ids.append(token_id)
        text = self.detokenizer.push(token_id)
        logprob, self.next_logprob = self.next_logprob, None
        if self.num_tokens > 1:
            return Token(index=self.num_tokens - 1, token_id=token_id, text=text, logprob=logprob)
        return FirstToken(
            token_id=token_id,
            text=text,
            prompt_tokens=self.num_prompt_tokens,
            queue_s=self.queue_s,
            prefill_s=self.prefill_s,
            logprob=logprob,
            prompt_logprobs=self.prompt_logprobs,
        )

    def natural_end(self, eos_token_ids: frozenset[int]) -> EndReason | None:
        """EOS beats budget: an answer that ends exactly at the budget ended by itself."""
        if self.token_ids and self.last_token_id in eos_token_ids:
            return EndReason.EOS
        if self.num_tokens >= self.max_new_tokens:
            return EndReason.BUDGET
        return None

    @property
    def queue_s(self) -> float:
        if self.prefill_start_s is None:
            return 0.0
        return self.prefill_start_s - self.arrival_s

    @property
    def prefill_s(self) -> float:
        if self.prefill_start_s is None or self.prefill_end_s is None:
            return 0.0
        return self.prefill_end_s - self.prefill_start_s
