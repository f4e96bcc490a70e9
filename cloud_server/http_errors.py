"""The one place a ``PDError`` becomes an HTTP error body and response.

The body carries both shapes clients read: pd clients read ``error.code`` / ``error.message``;
OpenAI clients read ``error.message`` / ``error.type`` / ``error.param`` / ``error.code``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from common.errors import InvalidRequest, PDError

log = logging.getLogger(__name__)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(err: PDError) -> dict:
    kind = _OPENAI_TYPES.get(err.http_status, "server_error")
    return {"error": {"code": err.code, "message": err.message, "type": kind, "param": None}}


def error_response(err: PDError) -> JSONResponse:
    headers = {}
    retry_after_s = getattr(err, "retry_after_s", None)
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(retry_after_s)))
    return JSONResponse(error_body(err), status_code=err.http_status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """Every error an app raises answers JSON: typed ones with their status, the rest 500."""

    @app.exception_handler(PDError)
    async def on_pd_error(_: Request, err: PDError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return error_response(InvalidRequest(problems))

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(PDError(f"internal error: {type(err).__name__}"))
