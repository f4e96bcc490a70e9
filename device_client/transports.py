"""Cloud transports: HTTP (SSE) and gRPC behind one ``CloudStream`` shape.

``open_stream`` sends the request and returns once the cloud has accepted it, before any event
(or raises a typed ``PDError``: unreachable, overloaded, invalid, ...; the same type over both
transports). The stream then yields cloud events; the device may send one handoff (with the
request's secret, so only this caller can stop it); closing it early is a disconnect the cloud
turns into a cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import urlparse

import grpc
import httpx
from httpx_sse import EventSource

from common.errors import CloudUnavailable, Overloaded, PDError, error_from_code
from common.messages import GenerateRequest, Handoff, parse_event
from common.proto import pd_pb2_grpc
from common.wire import (
    ERROR_CODE_TRAILER,
    REQUEST_SECRET_HEADER,
    RETRY_AFTER_TRAILER,
    Event,
    event_from_proto,
    handoff_to_proto,
    request_to_proto,
)

from .config import ClientConfig


class CloudStream(Protocol):
    def events(self) -> AsyncIterator[Event]: ...

    async def handoff(self, at_index: int) -> None: ...

    async def aclose(self) -> None: ...


class HttpStream:
    def __init__(self, client: httpx.AsyncClient, response: httpx.Response, request_id: str):
        self._client = client
        self._response = response
        self._request_id = request_id

    async def events(self) -> AsyncIterator[Event]:
        try:
            async for sse in EventSource(self._response).aiter_sse():
                yield parse_event(sse.event, sse.data)
        except httpx.HTTPError as err:
            raise CloudUnavailable(f"cloud stream broke: {err!r}") from None

    async def handoff(self, at_index: int) -> None:
        url = f"/v1/pd/requests/{self._request_id}/handoff"
        secret = self._response.headers.get(REQUEST_SECRET_HEADER, "")
        resp = await self._client.post(
            url,
            json=Handoff(at_index=at_index).model_dump(),
            headers={REQUEST_SECRET_HEADER: secret},
        )
        if resp.status_code not in (200, 404):  # 404: the request already ended
            raise _http_error(resp)

    async def aclose(self) -> None:
        await self._response.aclose()
        await self._client.aclose()


def _http_error(resp: httpx.Response) -> PDError:
    try:
        err = resp.json()["error"]
        out = error_from_code(err["code"], err["message"])
    except Exception:
        out = PDError(f"cloud answered HTTP {resp.status_code}")
    if isinstance(out, Overloaded):
        out.retry_after_s = float(resp.headers.get("retry-after", out.retry_after_s))
    return out


async def _open_http(url: str, request: GenerateRequest, config: ClientConfig) -> HttpStream:
    # Read timeouts live in the answer loop (first-token vs stall); here only connecting is bounded.
    timeout = httpx.Timeout(None, connect=config.connect_timeout_s)
    client = httpx.AsyncClient(base_url=url, timeout=timeout, headers=_auth_headers(config))
    try:
        http_request = client.build_request(
            "POST", "/v1/pd/generate", json=request.model_dump(mode="json")
        )
        response = await client.send(http_request, stream=True)
    except httpx.HTTPError as err:
        await client.aclose()
        raise CloudUnavailable(f"cloud unreachable at {url}: {err!r}") from None
    if response.status_code != 200:
        await response.aread()
        await client.aclose()
        raise _http_error(response)
    return HttpStream(client, response, request.request_id)


def _auth_headers(config: ClientConfig) -> dict[str, str]:
    return {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}


# Used when a status carries no ``ERROR_CODE_TRAILER`` (it did not come from our servicer).
_GRPC_ERRORS = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: "overloaded",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
    grpc.StatusCode.NOT_FOUND: "unknown_request",
    grpc.StatusCode.UNAUTHENTICATED: "unauthorized",
    grpc.StatusCode.UNAVAILABLE: "cloud_unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "cloud_unavailable",
}


def _status_error(code: grpc.StatusCode, details: str, trailing) -> PDError:
    """A gRPC status as the ``PDError`` the servicer raised (its code rides in the trailers)."""
    if code is grpc.StatusCode.OK:
        return CloudUnavailable("cloud closed the stream without an answer")
    meta = {k.lower(): v for k, v in (trailing or ())}
    fallback = _GRPC_ERRORS.get(code, "internal")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than" in details:
        fallback = "request_too_large"  # gRPC's own message-size cap, not an overload
    err = error_from_code(meta.get(ERROR_CODE_TRAILER, fallback), details)
    if isinstance(err, Overloaded) and RETRY_AFTER_TRAILER in meta:
        err.retry_after_s = float(meta[RETRY_AFTER_TRAILER])
    return err


def _grpc_error(err: grpc.aio.AioRpcError) -> PDError:
    return _status_error(err.code(), err.details() or str(err), err.trailing_metadata())


class GrpcStream:
    def __init__(self, channel: grpc.aio.Channel, call) -> None:
        self._channel = channel
        self._call = call

    async def events(self) -> AsyncIterator[Event]:
        try:
            while (msg := await self._call.read()) is not grpc.aio.EOF:
                yield event_from_proto(msg)
        except grpc.aio.AioRpcError as err:
            raise _grpc_error(err) from None

    async def handoff(self, at_index: int) -> None:
        # If the stream already ended there is nothing left to stop.
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
            await self._call.write(handoff_to_proto(Handoff(at_index=at_index)))

    async def aclose(self) -> None:
        self._call.cancel()
        await self._channel.close()


async def _open_grpc(url: str, request: GenerateRequest, config: ClientConfig) -> GrpcStream:
    message = request_to_proto(request)
    target = urlparse(url).netloc
    channel = grpc.aio.insecure_channel(target)
    try:
        await asyncio.wait_for(channel.channel_ready(), config.connect_timeout_s)
    except TimeoutError:
        await channel.close()
        raise CloudUnavailable(f"cloud unreachable at {url}: no connection") from None
    metadata = tuple(_auth_headers(config).items()) or None
    call = pd_pb2_grpc.PDServiceStub(channel).Generate(metadata=metadata)
    try:
        await call.write(message)
        # Admission sends the initial metadata at once; a refusal ends the call with a status.
        accepted = await call.initial_metadata()
        if not any(key == REQUEST_SECRET_HEADER for key, _ in accepted or ()):
            code = await call.code()
            raise _status_error(code, await call.details(), await call.trailing_metadata())
    except grpc.aio.AioRpcError as err:
        await channel.close()
        raise _grpc_error(err) from None
    except PDError:
        await channel.close()
        raise
    return GrpcStream(channel, call)


async def open_stream(request: GenerateRequest, config: ClientConfig) -> CloudStream:
    assert config.cloud_url is not None, "no cloud configured"
    url = config.cloud_url.rstrip("/")
    if config.network.is_active:
        from .network import EmulatedLinkStream, uplink_delay_s

        await asyncio.sleep(uplink_delay_s(config.network, len(request.model_dump_json())))
    if config.resolved_transport == "grpc":
        stream: CloudStream = await _open_grpc(url, request, config)
    else:
        if url.startswith("grpc://"):
            url = "http://" + url.removeprefix("grpc://")
        stream = await _open_http(url, request, config)
    if config.network.is_active:
        stream = EmulatedLinkStream(stream, config.network)
    return stream
