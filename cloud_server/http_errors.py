"""The one place a ``PDError`` becomes an HTTP error body and response.

The body carries both shapes clients read: pd clients read ``error.code`` / ``error.message``;
OpenAI clients read ``error.message`` / ``error.type`` / ``error.param`` / ``error.code``.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from common.errors import PDError

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
