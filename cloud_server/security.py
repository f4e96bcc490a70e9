"""API keys (bearer tokens) and request limits (size, read time), enforced before any handler or
model work.

Keys come from ``--api-key-file`` (one per line, ``#`` comments) and/or ``PDD_API_KEYS``
(comma-separated); the CLI reads both when the server starts. No keys: auth is off.
``/health`` and ``/metrics`` stay open (probes and Prometheus scrape without a key; metrics hold
counts and latencies, no prompts or keys).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from common.errors import PDError, RequestTimeout, RequestTooLarge, Unauthorized

from .config import SecurityConfig
from .http_errors import error_response

OPEN_PATHS = frozenset({"/health", "/metrics"})
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def load_api_keys(path: str | Path | None, env_value: str | None) -> frozenset[str]:
    """Keys from a file (one per line, blank lines and ``#`` comments skipped) and an env value."""
    keys: set[str] = set()
    if path is not None:
        for line in Path(path).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.add(line)
    if env_value:
        keys.update(k.strip() for k in env_value.split(",") if k.strip())
    return frozenset(keys)


def check_bearer(api_keys: frozenset[str], authorization: str | None) -> None:
    """Raise ``Unauthorized`` unless ``authorization`` is ``Bearer <a configured key>``."""
    if not api_keys:
        return
    if not authorization:
        raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("malformed Authorization header: use 'Authorization: Bearer <key>'")
    if not any(hmac.compare_digest(token.encode(), key.encode()) for key in api_keys):
        raise Unauthorized(
            "invalid API key: send 'Authorization: Bearer <key>' with a key this server holds"
        )


class SecurityMiddleware:
    """Pure ASGI: bearer check (except ``OPEN_PATHS``), a body-size cap (HTTP 413) and a time
    limit on reading the body (HTTP 408)."""

    def __init__(self, app: Callable, config: SecurityConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if scope["path"] not in OPEN_PATHS:
                check_bearer(self.config.api_keys, headers.get("authorization"))
            self._check_length(headers.get("content-length"))
        except PDError as err:
            await error_response(err)(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _check_length(self, content_length: str | None) -> None:
        is_number = content_length is not None and content_length.isdigit()
        if is_number and int(content_length) > self.config.max_body_bytes:
            raise self._too_large()

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"request body exceeds {self.config.max_body_bytes} bytes; send a shorter prompt"
        )

    def _limited(self, receive: Receive) -> Receive:
        """Count bytes of a chunked body too; past the cap, reading the body raises 413. The
        whole body must be in within ``request_read_timeout_s`` of its first read (408); after
        it, ``receive`` waits as long as it likes (a streaming response listens on it for the
        client's disconnect)."""
        num_bytes, body_done, deadline = 0, False, None
        limit_s = self.config.request_read_timeout_s

        async def wrapped() -> MutableMapping[str, Any]:
            nonlocal num_bytes, body_done, deadline
            if body_done:
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + limit_s
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body did not arrive within {limit_s:g} s; send it whole"
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            num_bytes += len(message.get("body", b""))
            if num_bytes > self.config.max_body_bytes:
                raise self._too_large()
            return message

        return wrapped
