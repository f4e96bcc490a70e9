"""HTTP transport: FastAPI over the engine. The pd stream is Server-Sent Events.

Routes: ``POST /v1/pd/generate`` (SSE: keep_set? first_token token* end),
``POST /v1/pd/requests/{request_id}/handoff``, ``GET /v1/pd/settings`` (the operator's
``SplitSettings``), the OpenAI API (``openai_api``), ``GET /health``, ``GET /metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from common.errors import NotConfigured
from common.messages import GenerateRequest, Handoff
from common.settings import SplitSettings
from common.wire import parse_body

from .config import SecurityConfig
from .engine_api import CloudEngine, RequestStream
from .front_end import REQUEST_SECRET_HEADER, new_secret, owner_of, submit
from .http_errors import add_error_handlers
from .openai_api import add_openai_routes
from .openapi_doc import describe_routes
from .security import SecurityMiddleware

log = logging.getLogger(__name__)


async def sse_events(stream: RequestStream) -> AsyncIterator[dict]:
    """Engine events as SSE dicts; a disconnect cancels this generator and so the request."""
    try:
        async for event in stream:
            yield {"event": event.type, "data": event.model_dump_json(exclude_none=True)}
    finally:
        stream.cancel()


def create_http_app(
    engine: CloudEngine,
    security: SecurityConfig | None = None,
    settings: SplitSettings | None = None,
) -> FastAPI:
    security = security or SecurityConfig()
    app = FastAPI(title="pd-device cloud", docs_url=None, redoc_url=None)
    app.add_middleware(SecurityMiddleware, config=security)
    add_error_handlers(app)
    add_openai_routes(app, engine)

    def owner(request: Request, secret: str | None) -> str:
        return owner_of(security.api_keys, request.headers.get("authorization"), secret)

    @app.post("/v1/pd/generate")
    async def generate(request: Request) -> EventSourceResponse:
        body = parse_body(GenerateRequest, await request.body())
        secret = new_secret()  # sent back with the handoff: only this caller may stop it
        stream = await submit(engine, body, owner(request, secret))
        return EventSourceResponse(sse_events(stream), headers={REQUEST_SECRET_HEADER: secret})

    @app.post("/v1/pd/requests/{request_id}/handoff")
    async def handoff(request_id: str, request: Request) -> dict:
        body = parse_body(Handoff, await request.body())
        caller = owner(request, request.headers.get(REQUEST_SECRET_HEADER))
        status = engine.handoff(request_id, body.at_index, caller)
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
            "can_score_prompts": engine.can_score_prompts,  # refinement's keep-sets (tuner)
            "active_requests": engine.num_active,
            "max_concurrent_requests": engine.config.max_concurrent_requests,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        content, content_type = engine.metrics.render()
        return Response(content, media_type=content_type)

    describe_routes(app)
    return app
