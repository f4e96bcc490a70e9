"""What every front end (pd HTTP, OpenAI, gRPC) does before the engine, written once.

- ``submit``: a text prompt's size is checked on its byte length first, then it is tokenized
  (chat template included) in a worker thread, so a huge prompt never stalls other streams on
  the event loop; the engine gets token ids.
- ``owner_of``: who may hand a request off. With API keys on, the caller's key (hashed); with
  keys off, a per-request secret the cloud hands out with the stream (``REQUEST_SECRET_HEADER``
  on HTTP) and the device sends back with its handoff. Anyone else gets the unknown-id answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from common.errors import PDError
from common.messages import GenerateRequest
from common.wire import REQUEST_SECRET_HEADER

from .engine_api import CloudEngine, RequestStream
from .validation import check_prompt_size, prompt_ids_for

__all__ = ["REQUEST_SECRET_HEADER", "new_secret", "owner_of", "submit", "tokenized"]


def new_secret() -> str:
    return secrets.token_urlsafe(16)


def owner_of(api_keys: frozenset[str], authorization: str | None, secret: str | None) -> str:
    """The engine owner of a caller: its key when keys are on, else the request's secret."""
    if api_keys:
        token = (authorization or "").partition(" ")[2].strip()
        return "key:" + hashlib.sha256(token.encode()).hexdigest()
    return "secret:" + (secret or "")


async def tokenized(request: GenerateRequest, engine: CloudEngine) -> GenerateRequest:
    """``request`` with its text prompt (or chat messages) as token ids, encoded off the loop."""
    if request.prompt_ids is not None:
        return request
    check_prompt_size(request, engine.model, engine.config)
    ids = await asyncio.to_thread(prompt_ids_for, request, engine.model)
    return request.model_copy(update={"prompt_ids": ids, "prompt": None, "messages": None})


async def submit(
    engine: CloudEngine, request: GenerateRequest, owner: str = "", extras=None
) -> RequestStream:
    """Check, tokenize off the loop and admit (the engine counts its own refusals). ``extras``:
    engine-only options of an OpenAI request, for an engine that offers them (``openai_api``)."""
    try:
        request = await tokenized(request, engine)
    except PDError as err:  # refused before the engine saw it: counted here, once
        engine.metrics.count_rejected(err.code)
        raise
    if extras is not None:
        return engine.submit(request, owner, extras=extras)
    return engine.submit(request, owner)
