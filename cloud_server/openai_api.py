"""OpenAI-compatible API over the same engine: the cloud-only path existing clients speak.

``POST /v1/completions``, ``POST /v1/chat/completions`` (SSE ending in ``data: [DONE]``, or one
JSON body), ``GET /v1/models``. A request becomes a ``GenerateRequest`` whose cloud budget is the
whole answer (``cloud_tokens = max_tokens - 1``). Stop strings are matched on the streamed text;
the text is cut before the match (OpenAI's behaviour) and the engine request is cancelled at once.
A client that goes away cancels its request, streaming or not. ``logprobs`` come from the
engine's logits; ``echo`` returns the prompt (with its logprobs when asked). Penalties go to an
engine that takes them (``extra_params``: the vllm engine) and are refused by one that does not.
Errors use OpenAI's body shape (``error.message/type/code``) with 4xx statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from common.errors import InvalidRequest, ModelNotFound, PDError
from common.messages import (
    ChatMessage,
    End,
    EndReason,
    FirstToken,
    GenerateRequest,
    SamplingParams,
    Token,
    TokenLogprob,
)
from common.wire import parse_body, validation_message

from .engine_api import CloudEngine, EngineExtras, RequestStream
from .front_end import new_secret, submit, tokenized
from .http_errors import error_body
from .openai_logprobs import LogprobFormatter
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

CLIENT_GONE_STATUS = 499  # nobody reads it: the client closed the connection


@dataclass(frozen=True)
class Piece:
    """Text safe to show, and the answer tokens [start, end) consumed to produce it."""

    text: str
    start: int
    end: int


class AnswerRun:
    """One answer's text pieces (stop strings applied), its tokens, logprobs, usage and finish."""

    def __init__(self, stream: RequestStream, stops: list[str]) -> None:
        self.stream = stream
        self.matcher = StopMatcher(stops)
        self.prompt_tokens = 0
        self.cached_tokens = 0  # prompt tokens the cloud's prefix cache held
        self.token_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []  # one per token when the request asked for them
        self.prompt_logprobs: list[TokenLogprob] | None = None
        self.finish_reason = "length"
        self._num_sent = 0

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    async def pieces(self) -> AsyncIterator[Piece]:
        try:
            async for event in self.stream:
                if isinstance(event, FirstToken | Token):
                    self._take(event)
                    if text := self.matcher.push(event.text):
                        yield self._piece(text)
                    if self.matcher.is_stopped:
                        self.finish_reason = "stop"
                        return
                elif isinstance(event, End):
                    self._end(event)
                    if text := self.matcher.flush():
                        yield self._piece(text)
        finally:
            self.stream.cancel("stop string matched or client gone")

    def rest(self) -> tuple[int, int]:
        """Tokens consumed after the last piece (a held-back tail, the stop string's tokens)."""
        return self._num_sent, len(self.token_ids)

    def _take(self, event: FirstToken | Token) -> None:
        if isinstance(event, FirstToken):
            self.prompt_tokens = event.prompt_tokens
            self.prompt_logprobs = event.prompt_logprobs
        self.token_ids.append(event.token_id)
        if event.logprob is not None:
            self.logprobs.append(event.logprob)

    def _piece(self, text: str) -> Piece:
        start, self._num_sent = self._num_sent, len(self.token_ids)
        return Piece(text, start, self._num_sent)

    def _end(self, end: End) -> None:
        if end.reason is EndReason.ERROR:
            raise PDError(end.message or "the cloud ended the answer with an error")
        self.prompt_tokens = end.usage.prompt_tokens
        self.cached_tokens = end.usage.cached_tokens
        self.finish_reason = "stop" if end.reason is EndReason.EOS else "length"


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
    echo_logprobs = not is_chat and req.echo and req.num_top_logprobs is not None
    try:
        return GenerateRequest(
            request_id=request_id,
            max_tokens=max_tokens,
            cloud_tokens=max_tokens - 1,  # cloud-only: the cloud decodes the whole answer
            sampling=SamplingParams(temperature=req.temperature, top_p=req.top_p, seed=seed),
            logprobs=req.num_top_logprobs,
            prompt_logprobs=req.num_top_logprobs if echo_logprobs else None,
            **prompt,
        )
    except ValidationError as err:
        raise InvalidRequest(validation_message(err)) from None


class Answer:
    """One OpenAI answer being built: its request, the engine run and how to format it."""

    def __init__(self, req, gen: GenerateRequest, run: AnswerRun, model: str, fmt) -> None:
        self.req = req
        self.gen = gen
        self.run = run
        self.model = model
        self.fmt: LogprobFormatter = fmt
        self.is_chat = isinstance(req, ChatRequest)
        self.wants_logprobs = req.num_top_logprobs is not None
        self.echo = "" if self.is_chat or not req.echo else self._prompt_text()

    def _prompt_text(self) -> str:
        if isinstance(self.req.prompt, str):
            return self.req.prompt
        return self.fmt.tokenizer.decode(self.gen.prompt_ids)

    def logprobs(self, start: int, end: int, with_prompt: bool = False) -> dict | None:
        if not self.wants_logprobs:
            return None
        if self.is_chat:
            return self.fmt.chat(self.run.logprobs[start:end])
        entries: list[TokenLogprob | None] = list(self.run.logprobs[start:end])
        ids = self.run.token_ids[start:end]
        offset = len(self.echo)
        if with_prompt and self.echo:
            prompt_ids = list(self.gen.prompt_ids or [])
            entries = [None, *(self.run.prompt_logprobs or [])] + entries
            ids, offset = prompt_ids + ids, 0
        return self.fmt.completion(entries, ids, offset)

    def echo_logprobs(self) -> dict | None:
        if not self.wants_logprobs:
            return None
        prompt_ids = list(self.gen.prompt_ids or [])
        return self.fmt.completion([None, *(self.run.prompt_logprobs or [])], prompt_ids, 0)

    async def as_json(self) -> dict:
        text = "".join([piece.text async for piece in self.run.pieces()])
        logprobs = self.logprobs(0, len(self.run.token_ids), with_prompt=True)
        chosen = choice(self.is_chat, self.echo + text, self.run.finish_reason, False, logprobs)
        usage = usage_body(
            self.run.prompt_tokens, self.run.completion_tokens, self.run.cached_tokens
        )
        rid = self.gen.request_id
        return body(rid, self.model, self.is_chat, is_chunk=False, choices=[chosen], usage=usage)

    async def as_sse(self, include_usage: bool) -> AsyncIterator[str]:
        rid, run, is_chat = self.gen.request_id, self.run, self.is_chat

        def chunk(**fields) -> str:
            return (
                f"data: {json.dumps(body(rid, self.model, is_chat, is_chunk=True, **fields))}\n\n"
            )

        try:
            if is_chat:
                first = {"index": 0, "delta": {"role": "assistant", "content": ""}}
                yield chunk(choices=[first | {"logprobs": None, "finish_reason": None}])
            elif self.echo:
                yield chunk(choices=[choice(False, self.echo, None, True, self.echo_logprobs())])
            async for piece in run.pieces():
                lp = self.logprobs(piece.start, piece.end)
                yield chunk(choices=[choice(is_chat, piece.text, None, True, lp)])
            last = choice(is_chat, None, run.finish_reason, True, self.logprobs(*run.rest()))
            yield chunk(choices=[last])
            if include_usage:
                usage = usage_body(run.prompt_tokens, run.completion_tokens, run.cached_tokens)
                yield chunk(choices=[], usage=usage)
        except PDError as err:
            yield f"data: {json.dumps(error_body(err))}\n\n"
        finally:
            run.stream.cancel()
        yield "data: [DONE]\n\n"


def engine_extras(req: CompletionRequest | ChatRequest, engine: CloudEngine):
    """The request's engine-dependent options (penalties, ``ignore_eos``) for an engine that
    takes them; a 400 that names each one otherwise. None when the request gives none."""
    options = req.engine_options
    if not options:
        return None
    offered = getattr(engine, "extra_params", frozenset())
    refused = sorted(set(options) - offered)
    if refused:
        raise InvalidRequest(
            f"unsupported parameter(s): {', '.join(refused)}; this server's engine does not "
            "offer them (leave them out, or serve with `pdd serve --engine vllm`)"
        )
    return EngineExtras(**options)


async def unless_disconnected(request: Request, answer: Awaitable[dict]) -> dict | Response:
    """``answer``'s result, or, when the client goes away first, cancel it (and so its engine
    request, which frees the slot at the next step) and answer nobody."""
    task = asyncio.ensure_future(answer)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return Response(status_code=CLIENT_GONE_STATUS)


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def add_openai_routes(app: FastAPI, engine: CloudEngine) -> None:
    model_name = engine.model.name
    formatter = LogprobFormatter(engine.model.tokenizer)

    async def serve(request: Request, kind: type[CompletionRequest] | type[ChatRequest]):
        req = parse_body(kind, await request.body())
        if req.model != model_name:
            raise ModelNotFound(f"model {req.model!r} is not served here; GET /v1/models lists it")
        rid = new_id("chatcmpl" if kind is ChatRequest else "cmpl")
        extras = engine_extras(req, engine)
        gen = await tokenized(to_generate_request(req, rid), engine)
        # Nobody hands an OpenAI request off: its owner is a secret no caller knows.
        stream = await submit(engine, gen, owner="openai:" + new_secret(), extras=extras)
        answer = Answer(req, gen, AnswerRun(stream, req.stops), model_name, formatter)
        if not req.stream:
            return await unless_disconnected(request, answer.as_json())
        sse = answer.as_sse(req.include_usage)
        return StreamingResponse(sse, media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await serve(request, CompletionRequest)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await serve(request, ChatRequest)

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": model_name, "object": "model", "created": 0, "owned_by": "pd-device"}
        return {"object": "list", "data": [card]}
