"""OpenAI-compatible request models, stop-string matching and response bodies.

Only the fields this server honours are declared; unknown fields (``user``, penalties, ...) are
ignored as most OpenAI-compatible servers do. ``n > 1`` and ``logprobs`` are refused with a 400.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_CHAT_MAX_TOKENS = 512  # OpenAI's default is "the rest of the context"; we cap it
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions
MAX_STOPS = 4


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="only one choice per request")

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
    prompt: str | list[int] | list[str]
    logprobs: None = None
    echo: bool = Field(False, description="not supported")

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
    logprobs: bool | None = Field(None, description="not supported")

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("logprobs are not supported")
        return value


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


def choice(is_chat: bool, text: str | None, finish_reason: str | None, is_delta: bool) -> dict:
    """One choice of a chat or completion body (a delta when streaming chat)."""
    if not is_chat:
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
    if is_delta:
        delta = {} if text is None else {"content": text}
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    message = {"role": "assistant", "content": text or ""}
    return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}


def body(request_id: str, model: str, is_chat: bool, is_chunk: bool, **fields) -> dict:
    kind = ("chat.completion" if is_chat else "text_completion") + (
        ".chunk" if is_chat and is_chunk else ""
    )
    base = {"id": request_id, "object": kind, "created": int(time.time()), "model": model}
    return base | fields
