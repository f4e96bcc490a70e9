"""Wire messages: the one definition HTTP (JSON/SSE) and gRPC (``proto/pd.proto``) both carry.

Flow: the device sends a ``GenerateRequest``; the cloud answers with a stream of ``CloudEvent``
(``KeepSet``? ``FirstToken`` ``Token``* ``End``); the device may send one ``Handoff``.
Token indices count answer tokens: the first token is index 0, cloud token i (i >= 1) is index i.
"""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, model_validator

MAX_REFINE_RATIO = 0.9
MAX_TOP_LOGPROBS = 20


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SamplingParams(_Msg):
    """temperature 0 means greedy. Token i is drawn with a generator seeded from (seed, i)."""

    temperature: float = Field(0.0, ge=0.0, le=10.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: StrictInt = Field(0, ge=0, description="0 disables top-k")
    seed: StrictInt = Field(0, ge=0, lt=2**63)

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0


class ChatMessage(_Msg):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateRequest(_Msg):
    """One pd request. Exactly one of ``prompt_ids``, ``prompt``, ``messages`` is set.

    Devices send ``prompt_ids`` (ids cross the network, never text to re-tokenize); ``prompt`` and
    ``messages`` are conveniences for curl users. ``raw`` skips the chat template for ``prompt``.
    """

    model_config = ConfigDict(  # the JSON schema says a prompt is needed (the validator: one)
        json_schema_extra={
            "anyOf": [{"required": [f]} for f in ("prompt_ids", "prompt", "messages")]
        }
    )

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    prompt_ids: list[StrictInt] | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    raw: bool = False
    max_tokens: StrictInt = Field(
        ..., gt=0, description="answer length limit, first token included"
    )
    cloud_tokens: StrictInt = Field(
        ..., ge=0, description="N: tokens the cloud may decode after the first"
    )
    refine_ratio: float = Field(0.0, ge=0.0, le=MAX_REFINE_RATIO, allow_inf_nan=False)
    sampling: SamplingParams = SamplingParams()
    fingerprint: str | None = Field(None, description="model/tokenizer fingerprint of the device")
    num_device_cached_tokens: StrictInt = Field(
        0, ge=0, description="leading prompt tokens the device's session cache already holds"
    )
    logprobs: StrictInt | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="each answer token's logprob and this many top"
    )
    prompt_logprobs: StrictInt | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="each prompt token's logprob and this many top"
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateRequest:
        given = [f for f in ("prompt_ids", "prompt", "messages") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of prompt_ids, prompt, messages (got {given or 'none'})"
            )
        if self.prompt_ids is not None and not self.prompt_ids:
            raise ValueError("prompt_ids is empty: send at least one token id")
        if self.num_device_cached_tokens > len(self.prompt_ids or []):
            raise ValueError("num_device_cached_tokens exceeds the prompt_ids sent")
        if self.prompt is not None and not self.prompt:
            raise ValueError("prompt is empty: send some text")
        if self.messages is not None and not self.messages:
            raise ValueError("messages is empty: send at least one message")
        return self


class Handoff(_Msg):
    """The device has caught up: it shows tokens from ``at_index`` on itself."""

    at_index: StrictInt = Field(..., ge=0)


class EndReason(str, Enum):
    BUDGET = "budget"  # first token + N cloud tokens sent (or max_tokens reached)
    EOS = "eos"
    HANDOFF = "handoff"
    CANCELLED = "cancelled"  # client disconnected
    ERROR = "error"


class Usage(_Msg):
    prompt_tokens: int
    completion_tokens: int = Field(description="tokens the cloud generated, first token included")
    queue_s: float = 0.0
    prefill_s: float = 0.0
    busy_s: float = Field(0.0, description="time the request held an engine slot")
    cached_tokens: int = Field(
        0, description="prompt tokens whose KV came from the cloud's prefix cache (not prefilled)"
    )


class KeepSet(_Msg):
    """Prompt refinement: positions of the prompt the device should prefill (sorted)."""

    type: Literal["keep_set"] = "keep_set"
    is_available: bool
    kept_positions: list[int] = []
    reason: str = ""


class TopLogprob(_Msg):
    token_id: int
    logprob: float


class TokenLogprob(_Msg):
    """log P(token) from the model's own logits (before temperature and top-p), and the most
    likely alternatives at that position (asked for with ``logprobs`` / ``prompt_logprobs``)."""

    token_id: int
    logprob: float
    top: list[TopLogprob] = []


class FirstToken(_Msg):
    type: Literal["first_token"] = "first_token"
    token_id: int
    text: str
    prompt_tokens: int
    queue_s: float
    prefill_s: float
    logprob: TokenLogprob | None = None
    # prompt tokens 1..L-1 (the first prompt token has no context to be scored in)
    prompt_logprobs: list[TokenLogprob] | None = None


class Token(_Msg):
    type: Literal["token"] = "token"
    index: int
    token_id: int
    text: str
    logprob: TokenLogprob | None = None


class End(_Msg):
    type: Literal["end"] = "end"
    reason: EndReason
    usage: Usage
    message: str = ""


CloudEvent = Annotated[KeepSet | FirstToken | Token | End, Field(discriminator="type")]
CLOUD_EVENT = TypeAdapter(CloudEvent)


def parse_event(event_type: str, data: str) -> KeepSet | FirstToken | Token | End:
    """Parse one SSE event (its ``event:`` name and ``data:`` JSON)."""
    event = CLOUD_EVENT.validate_json(data)
    assert event.type == event_type, f"SSE event name {event_type!r} != payload type {event.type!r}"
    return event
