"""One typed error hierarchy; each error knows its HTTP status and gRPC code.

Raised at the boundary (validation, admission, lookup) and mapped to the wire in exactly one
place per transport (``cloud_server.http_errors.error_response`` / ``cloud_server.app_grpc.
abort_with``, which also sends ``code`` in the trailers). Clients rebuild the type from ``code``
(``error_from_code``), so a device gets the same error type over HTTP and gRPC.
"""

from __future__ import annotations

import grpc


class PDError(Exception):
    """Base of every error this project reports to a client."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(PDError):
    """The request itself is wrong; the message says what to fix."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    code = "invalid_request"


class PromptTooLong(InvalidRequest):
    code = "prompt_too_long"


class FingerprintMismatch(InvalidRequest):
    """The device runs a different model or tokenizer than the cloud."""

    http_status = 409
    code = "fingerprint_mismatch"


class RequestTooLarge(InvalidRequest):
    """The request body is larger than this server accepts."""

    http_status = 413
    code = "request_too_large"


class RequestTimeout(InvalidRequest):
    """The request (its body, or its first gRPC message) did not arrive in time."""

    http_status = 408
    code = "request_timeout"


class UnknownRequest(PDError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    code = "unknown_request"


class NotConfigured(PDError):
    """An optional feature this server was started without."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    code = "not_configured"


class ModelNotFound(PDError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    code = "model_not_found"


class Unauthorized(PDError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    code = "unauthorized"


class Overloaded(PDError):
    """No free slot: rejected at once instead of queued (P/D-Serve's on-demand rejection)."""

    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CloudUnavailable(PDError):
    """Client side: the cloud could not be reached or broke mid-stream."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    code = "cloud_unavailable"


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        PromptTooLong,
        RequestTooLarge,
        RequestTimeout,
        FingerprintMismatch,
        NotConfigured,
        ModelNotFound,
        UnknownRequest,
        Unauthorized,
        Overloaded,
        CloudUnavailable,
    )
}


def error_from_code(code: str, message: str) -> PDError:
    """Rebuild a typed error on the client from the wire ``code`` string."""
    cls = _BY_CODE.get(code, PDError)
    return cls(message)
