"""HTTP transport: FastAPI over the engine. The pd stream is Server-Sent Events.

Routes: ``POST /v1/pd/generate`` (SSE: keep_set? first_token token* end),
``POST /v1/pd/requests/{request_id}/handoff``, ``GET /v1/pd/settings`` (the operator's
``SplitSettings``), the OpenAI API (``openai_api``), ``GET /health``, ``GET /metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse

from common.errors import InvalidRequest, NotConfigured, PDError
from common.messages import GenerateRequest, Handoff
from common.settings import SplitSettings
from common.wire import validation_message

from .config import SecurityConfig
from .engine_api import CloudEngine, RequestStream
from .http_errors import error_response
from .openai_api import add_openai_routes
from .security import SecurityMiddleware

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: bytes) -> M:
    """Malformed JSON and schema errors become ``InvalidRequest`` with a readable message."""
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        raise InvalidRequest(validation_message(err)) from None


async def sse_events(stream: RequestStream) -> AsyncIterator[dict]:
    """Engine events as SSE dicts; a disconnect cancels this generator and so the request."""
    try:
        async for event in stream:
            yield {"event": event.type, "data": event.model_dump_json()}
    finally:
        stream.cancel()


def create_http_app(
    engine: CloudEngine,
    security: SecurityConfig | None = None,
    settings: SplitSettings | None = None,
) -> FastAPI:
    app = FastAPI(title="pd-device cloud", docs_url=None, redoc_url=None)
    app.add_middleware(SecurityMiddleware, config=security or SecurityConfig())
    _add_error_handlers(app)
    add_openai_routes(app, engine)

    @app.post("/v1/pd/generate")
    async def generate(request: Request) -> EventSourceResponse:
        stream = engine.submit(parse_body(GenerateRequest, await request.body()))
        return EventSourceResponse(sse_events(stream))

    @app.post("/v1/pd/requests/{request_id}/handoff")
    async def handoff(request_id: str, request: Request) -> dict:
        body = parse_body(Handoff, await request.body())
        status = engine.handoff(request_id, body.at_index)
        return {"request_id": request_id, "status": status}

    @app.get("/v1/pd/settings")
    async def split_settings() -> dict:
        if settings is None:
            raise NotConfigured("this server has no --settings; use the device's own defaults")
        return settings.model_dump(mode="json")

    @app.get("/health")
    async def health() -> dict:
        model = engine.model
        return {
            "status": "ok",
            "model": model.name,
            "fingerprint": model.fingerprint,
            "platform": model.platform.name,
            "active_requests": engine.num_active,
            "max_concurrent_requests": engine.config.max_concurrent_requests,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        content, content_type = engine.metrics.render()
        return Response(content, media_type=content_type)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PDError)
    async def on_pd_error(_: Request, err: PDError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(InvalidRequest(validation_message(err)))

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(PDError(f"internal error: {type(err).__name__}"))
