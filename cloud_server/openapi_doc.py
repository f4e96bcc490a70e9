"""``/openapi.json`` as the server really behaves: the request bodies (the same pydantic models the
handlers validate with), the status codes they answer (400, not FastAPI's 422) and
``text/event-stream`` where a route streams.

The handlers read raw bodies (size limits and readable 400s come first), so FastAPI cannot infer
any of this; ``ROUTES`` says it once per route, and ``describe_routes`` writes it into the schema.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from common.messages import GenerateRequest, Handoff

from .openai_schema import ChatRequest, CompletionRequest

JSON = "application/json"
SSE = "text/event-stream"

_MEANING = {
    400: "invalid request (malformed JSON, a field out of range, prompt too long)",
    401: "missing or invalid API key",
    404: "unknown request id, model or feature",
    409: "the device's model fingerprint does not match the cloud's",
    413: "request body over the server's limit",
    429: "no free slot: rejected at once (see Retry-After)",
    503: "the server is shutting down",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    type: str
    param: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


@dataclass(frozen=True)
class RouteDoc:
    body: type[BaseModel] | None = None
    ok_types: tuple[str, ...] = (JSON,)
    errors: tuple[int, ...] = ()


_KEYED = (401,)  # every route but /health and /metrics needs the key when keys are on
ROUTES: dict[tuple[str, str], RouteDoc] = {
    ("/v1/pd/generate", "post"): RouteDoc(GenerateRequest, (SSE,), (400, 401, 409, 413, 429, 503)),
    ("/v1/pd/requests/{request_id}/handoff", "post"): RouteDoc(
        Handoff, (JSON,), (400, 401, 404, 413)
    ),
    ("/v1/completions", "post"): RouteDoc(
        CompletionRequest, (JSON, SSE), (400, 401, 404, 413, 429, 503)
    ),
    ("/v1/chat/completions", "post"): RouteDoc(
        ChatRequest, (JSON, SSE), (400, 401, 404, 413, 429, 503)
    ),
    ("/v1/models", "get"): RouteDoc(errors=_KEYED),
    ("/v1/pd/settings", "get"): RouteDoc(errors=(401, 404)),
    ("/health", "get"): RouteDoc(),
    ("/metrics", "get"): RouteDoc(ok_types=("text/plain",)),
}

_SECRET_PARAM = {
    "name": "x-pd-request-secret",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "the secret from the generate response (needed when API keys are off)",
}


def describe_routes(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe every route of ``ROUTES`` the app has."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _patch(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _patch(schema: dict) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    error_ref = _add_model(components, ErrorBody)
    for (path, method), doc in ROUTES.items():
        op = schema.get("paths", {}).get(path, {}).get(method)
        if op is None:
            continue
        if doc.body is not None:
            ref = _add_model(components, doc.body)
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": ref}}}
        if doc.body is Handoff:
            op.setdefault("parameters", []).append(_SECRET_PARAM)
        responses = {"200": {"description": "OK", "content": {t: {} for t in doc.ok_types}}}
        for status in doc.errors:
            content = {JSON: {"schema": error_ref}}
            responses[str(status)] = {"description": _MEANING[status], "content": content}
        op["responses"] = responses


def _add_model(components: dict, model: type[BaseModel]) -> dict:
    """Put ``model`` (and the models it uses) into the components; return a $ref to it."""
    js = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(js.pop("$defs", {}))
    components[model.__name__] = js
    return {"$ref": f"#/components/schemas/{model.__name__}"}
