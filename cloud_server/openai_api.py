"""OpenAI-compatible API over the same engine: the cloud-only path existing clients speak.

``POST /v1/completions``, ``POST /v1/chat/completions`` (SSE ending in ``data: [DONE]``, or one
JSON body), ``GET /v1/models``. A request becomes a ``GenerateRequest`` whose cloud budget is the
whole answer (``cloud_tokens = max_tokens - 1``). Stop strings are matched on the streamed text;
the text is cut before the match (OpenAI's behaviour) and the engine request is cancelled at once.
Errors use OpenAI's body shape (``error.message/type/code``) with 4xx statuses.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from common.errors import InvalidRequest, ModelNotFound, PDError
from common.messages import (
    ChatMessage,
    End,
    EndReason,
    FirstToken,
    GenerateRequest,
    SamplingParams,
    Token,
)
from common.wire import validation_message

from .engine_api import CloudEngine, RequestStream
from .http_errors import error_body
from .openai_schema import (
    DEFAULT_CHAT_MAX_TOKENS,
    DEFAULT_COMPLETION_MAX_TOKENS,
    ChatRequest,
    CompletionRequest,
    StopMatcher,
    body,
    choice,
    new_id,
    usage_body,
)

M = TypeVar("M", bound=BaseModel)


class AnswerRun:
    """One answer's text pieces (stop strings applied) and its usage and finish reason."""

    def __init__(self, stream: RequestStream, stops: list[str]) -> None:
        self.stream = stream
        self.matcher = StopMatcher(stops)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = "length"

    async def pieces(self) -> AsyncIterator[str]:
        try:
            async for event in self.stream:
                if isinstance(event, FirstToken | Token):
                    if isinstance(event, FirstToken):
                        self.prompt_tokens = event.prompt_tokens
                    self.completion_tokens += 1
                    if text := self.matcher.push(event.text):
                        yield text
                    if self.matcher.is_stopped:
                        self.finish_reason = "stop"
                        return
                elif isinstance(event, End):
                    self._end(event)
                    if text := self.matcher.flush():
                        yield text
        finally:
            self.stream.cancel("stop string matched or client gone")

    def _end(self, end: End) -> None:
        if end.reason is EndReason.ERROR:
            raise PDError(end.message or "the cloud ended the answer with an error")
        self.prompt_tokens = end.usage.prompt_tokens
        self.finish_reason = "stop" if end.reason is EndReason.EOS else "length"


def parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        raise InvalidRequest(validation_message(err)) from None


def to_generate_request(req: CompletionRequest | ChatRequest, request_id: str) -> GenerateRequest:
    is_chat = isinstance(req, ChatRequest)
    default = DEFAULT_CHAT_MAX_TOKENS if is_chat else DEFAULT_COMPLETION_MAX_TOKENS
    max_tokens = req.max_completion_tokens or req.max_tokens or default
    seed = req.seed if req.seed is not None else random.getrandbits(62)
    prompt: dict = {}
    if isinstance(req, ChatRequest):
        prompt["messages"] = [
            ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text)
            for m in req.messages
        ]
    elif isinstance(req.prompt, str):
        prompt |= {"prompt": req.prompt, "raw": True}
    else:
        prompt["prompt_ids"] = req.prompt
    try:
        return GenerateRequest(
            request_id=request_id,
            max_tokens=max_tokens,
            cloud_tokens=max_tokens - 1,  # cloud-only: the cloud decodes the whole answer
            sampling=SamplingParams(temperature=req.temperature, top_p=req.top_p, seed=seed),
            **prompt,
        )
    except ValidationError as err:
        raise InvalidRequest(validation_message(err)) from None


async def answer_json(run: AnswerRun, rid: str, model: str, is_chat: bool) -> dict:
    text = "".join([piece async for piece in run.pieces()])
    return body(
        rid,
        model,
        is_chat,
        is_chunk=False,
        choices=[choice(is_chat, text, run.finish_reason, is_delta=False)],
        usage=usage_body(run.prompt_tokens, run.completion_tokens),
    )


async def answer_sse(
    run: AnswerRun, rid: str, model: str, is_chat: bool, include_usage: bool
) -> AsyncIterator[str]:
    def chunk(**fields) -> str:
        return f"data: {json.dumps(body(rid, model, is_chat, is_chunk=True, **fields))}\n\n"

    try:
        if is_chat:
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}}
            yield chunk(choices=[first | {"logprobs": None, "finish_reason": None}])
        async for text in run.pieces():
            yield chunk(choices=[choice(is_chat, text, None, is_delta=True)])
        yield chunk(choices=[choice(is_chat, None, run.finish_reason, is_delta=True)])
        if include_usage:
            yield chunk(choices=[], usage=usage_body(run.prompt_tokens, run.completion_tokens))
    except PDError as err:
        yield f"data: {json.dumps(error_body(err))}\n\n"
    finally:
        run.stream.cancel()
    yield "data: [DONE]\n\n"


def add_openai_routes(app: FastAPI, engine: CloudEngine) -> None:
    model_name = engine.model.name

    async def serve(raw: bytes, kind: type[CompletionRequest] | type[ChatRequest]):
        req = parse(kind, raw)
        if req.model != model_name:
            raise ModelNotFound(f"model {req.model!r} is not served here; GET /v1/models lists it")
        is_chat = kind is ChatRequest
        rid = new_id("chatcmpl" if is_chat else "cmpl")
        stream = engine.submit(to_generate_request(req, rid))
        run = AnswerRun(stream, req.stops)
        if not req.stream:
            return await answer_json(run, rid, model_name, is_chat)
        sse = answer_sse(run, rid, model_name, is_chat, req.include_usage)
        return StreamingResponse(sse, media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await serve(await request.body(), CompletionRequest)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await serve(await request.body(), ChatRequest)

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": model_name, "object": "model", "created": 0, "owned_by": "pd-device"}
        return {"object": "list", "data": [card]}
