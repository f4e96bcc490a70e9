"""The engine seam: what the HTTP, gRPC and OpenAI front ends need from a cloud engine, and no more.

The builtin engine (``cloud_server.engine.Engine``, transformers) and any other engine (vLLM)
implement ``CloudEngine``. A front end parses its wire format into a ``GenerateRequest``, calls
``submit`` and relays the ``RequestStream``'s events; a handoff goes to ``handoff``. Admission,
validation and the count of refused requests happen inside ``submit`` (``metrics.rejected``), so
front ends only map a raised ``PDError`` to their wire.

Requests are keyed by ``(owner, request_id)``. ``owner`` is an opaque string the front end
derives for its caller (an API key hash, a per-request secret): the same id from two owners is
two requests, and a handoff from another owner gets exactly the answer an unknown id gets
(``UnknownRequest``), so nobody can stop, or learn of, another caller's request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from common.messages import End, FirstToken, GenerateRequest, KeepSet, Token

if TYPE_CHECKING:  # no torch / transformers import just to name the contract
    from transformers import PreTrainedTokenizerBase

    from common.platform import Platform

    from .config import EngineConfig
    from .metrics import Metrics

Event = KeepSet | FirstToken | Token | End  # what a RequestStream yields; the last one is End


@dataclass(frozen=True)
class EngineExtras:
    """Options of one OpenAI-route request (a cloud-only answer) that not every engine offers:
    vLLM's penalties, and ``ignore_eos`` (run to ``max_tokens`` past end-of-sequence tokens, as
    vLLM's benchmark client asks for with random prompts). An engine lists the ones it takes in
    ``extra_params``; the OpenAI layer refuses the others by name (``openai_api.engine_extras``).
    The defaults change nothing."""

    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False

    @property
    def uses_penalties(self) -> bool:
        neutral = self.neutral()
        return any(getattr(self, k) != neutral[k] for k in neutral if k.endswith("_penalty"))

    @classmethod
    def neutral(cls) -> dict[str, float | bool]:
        """Each option's value that changes nothing (its default)."""
        return {f.name: f.default for f in fields(cls)}

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(cls.neutral())


class ModelInfo(Protocol):
    """The served model as the front ends see it (``common.model.LoadedModel`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...
    @property
    def eos_token_ids(self) -> frozenset[int]: ...
    @property
    def max_context(self) -> int: ...
    @property
    def platform(self) -> Platform: ...
    def encode(
        self, prompt: str | None = None, messages: list[dict] | None = None, raw: bool = False
    ) -> list[int]:
        """Prompt text or chat messages to token ids (the front ends tokenize off the loop)."""
        ...


@runtime_checkable
class RequestStream(Protocol):
    """One admitted request's events, ending with exactly one ``End``.

    ``cancel(message)`` stops the request if it still runs (disconnect, stop string); after the
    ``End`` it does nothing. Consumed from the event loop that called ``submit``.
    """

    @property
    def request_id(self) -> str: ...
    def __aiter__(self) -> AsyncIterator[Event]: ...
    async def __anext__(self) -> Event: ...
    def cancel(self, message: str = "client disconnected") -> None: ...


@runtime_checkable
class CloudEngine(Protocol):
    @property
    def model(self) -> ModelInfo: ...
    @property
    def config(self) -> EngineConfig: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def can_score_prompts(self) -> bool:
        """True when ``refine_ratio > 0`` yields a real keep-set (else it says unavailable)."""
        ...

    @property
    def num_active(self) -> int:
        """Requests admitted and not yet ended (queued, prefilling or decoding)."""
        ...

    def start(self) -> None:
        """Begin serving (load, warm up, start workers)."""
        ...

    def close(self) -> None:
        """Refuse new requests and end the active ones with an error ``End``; does not block."""
        ...

    def stop(self, timeout_s: float = 10.0) -> None:
        """``close()`` and wait for the engine's workers to finish."""
        ...

    def submit(
        self, request: GenerateRequest, owner: str = "", extras: EngineExtras | None = None
    ) -> RequestStream:
        """Validate and admit ``request`` at once, or raise a ``PDError`` saying why not (and
        count it in ``metrics.rejected``). Call from the event loop that consumes the stream.
        ``extras``: only the options named in the engine's ``extra_params``."""
        ...

    def handoff(self, request_id: str, at_index: int, owner: str = "") -> str:
        """The device shows tokens from ``at_index`` on: stop this request within one step.

        Returns "stopping", or "finished" for a request of this owner that recently ended (a late
        handoff is normal). Raises ``UnknownRequest`` otherwise, another owner's request included.
        """
        ...
