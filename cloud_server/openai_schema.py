"""OpenAI-compatible request models, stop-string matching and response bodies.

Every parameter is honoured or refused, never ignored: the fields declared here are implemented
(``logprobs`` / ``top_logprobs``, ``echo`` included); OpenAI parameters this server does not
implement (``response_format``, ``tools``, ``logit_bias``, ``n > 1``, ...) are accepted only at
their neutral value (which changes nothing) and otherwise refused with a 400 that names them; any
other field is refused as unknown. ``user`` is accepted (it changes no output). The penalties
(``presence_penalty``, ``frequency_penalty`` and vLLM's ``repetition_penalty``) are declared here;
the engine decides: the vllm engine applies them, the builtin engine refuses a non-neutral one
(``openai_api.engine_extras``), and so does vLLM's ``ignore_eos`` (both engines take it).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from cloud_server.engine_api import EngineExtras
from common.messages import MAX_TOP_LOGPROBS

DEFAULT_CHAT_MAX_TOKENS = 512  # OpenAI's default is "the rest of the context"; we cap it
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions
MAX_STOPS = 4


class StreamOptions(BaseModel):
    include_usage: bool = False


# OpenAI parameters not implemented here, with the neutral values that change nothing.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None, True, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "user": (),  # any value: it only names the end user
}


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unimplemented(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        refused = [
            k for k, ok in _NEUTRAL.items() if k in data and ok and not _is_one_of(data[k], ok)
        ]
        if refused:
            raise ValueError(
                f"unsupported parameter(s): {', '.join(refused)}; this server does not implement "
                "them (leave them out or send their default)"
            )
        return {k: v for k, v in data.items() if k not in _NEUTRAL}

    model: str
    max_tokens: StrictInt | None = Field(None, gt=0)
    max_completion_tokens: StrictInt | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: StrictInt | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = Field(1, ge=1, le=1, description="only one choice per request")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False)
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, allow_inf_nan=False)
    ignore_eos: bool = Field(False, description="vLLM's: decode to max_tokens past end-of-sequence")

    @property
    def engine_options(self) -> dict[str, float | bool]:
        """The engine-dependent options given at a value that changes the answer (vLLM's
        neutral values: no penalty, stop at end-of-sequence)."""
        neutral = EngineExtras.neutral()
        given = {k: getattr(self, k) for k in neutral}
        return {k: v for k, v in given.items() if v is not None and v != neutral[k]}

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS or any(not s for s in stops):
            raise ValueError(f"stop: up to {MAX_STOPS} non-empty strings")
        return value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_Common):
    prompt: str | list[StrictInt] | list[str]
    logprobs: StrictInt | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="logprob of each token and this many top"
    )
    echo: bool = Field(False, description="the prompt is returned before the completion")

    @property
    def num_top_logprobs(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[int] | list[str]) -> str | list[int]:
        if isinstance(value, list) and value and isinstance(value[0], str):
            if len(value) != 1:
                raise ValueError("prompt: one prompt per request (a list of one string)")
            value = value[0]
        if not value:
            raise ValueError("prompt is empty")
        return value


class ChatContentPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ChatContentPart]

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatRequest(_Common):
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    logprobs: bool | None = Field(None, description="logprob of each answer token")
    top_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @property
    def num_top_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class StopMatcher:
    """Cuts streamed text at the first stop string; holds back a tail that may start one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self._held = ""
        self.is_stopped = False

    def push(self, text: str) -> str:
        """Text that is safe to show now (before any stop string)."""
        if self.is_stopped:
            return ""
        buf = self._held + text
        hits = [(buf.find(s), s) for s in self.stops if s in buf]
        if hits:
            self.is_stopped = True
            self._held = ""
            return buf[: min(hits)[0]]
        keep = max((_overlap(buf, s) for s in self.stops), default=0)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        out, self._held = self._held, ""
        return out


def _is_one_of(value: Any, allowed: tuple[Any, ...]) -> bool:
    return any(type(value) is type(a) and value == a for a in allowed if a is not None) or (
        value is None and None in allowed
    )


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage_body(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    """``cached_tokens``: prompt tokens the cloud's prefix cache held (OpenAI's field)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def choice(
    is_chat: bool,
    text: str | None,
    finish_reason: str | None,
    is_delta: bool,
    logprobs: dict | None = None,
) -> dict:
    """One choice of a chat or completion body (a delta when streaming chat)."""
    end = {"logprobs": logprobs, "finish_reason": finish_reason}
    if not is_chat:
        return {"index": 0, "text": text or ""} | end
    if is_delta:
        return {"index": 0, "delta": {} if text is None else {"content": text}} | end
    return {"index": 0, "message": {"role": "assistant", "content": text or ""}} | end


def body(request_id: str, model: str, is_chat: bool, is_chunk: bool, **fields) -> dict:
    kind = ("chat.completion" if is_chat else "text_completion") + (
        ".chunk" if is_chat and is_chunk else ""
    )
    base = {"id": request_id, "object": kind, "created": int(time.time()), "model": model}
    return base | fields
