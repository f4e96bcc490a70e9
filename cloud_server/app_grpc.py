"""gRPC transport: ``pd.v1.PDService/Generate`` over the engine, plus the standard health service.

The first ``DeviceMessage`` is the request; a later one with ``handoff`` hands off (only the
stream's own request: the stream is the caller's proof). Once admitted, the call's initial
metadata goes out at once (before the prefill), so the device knows it was accepted and can hand
off before the first token. Cancelling the call cancels the request. Undecodable or oversized
bytes are read as a ``MalformedMessage`` (not gRPC's INTERNAL / RESOURCE_EXHAUSTED) so the client
gets INVALID_ARGUMENT with a message. Errors carry their ``PDError.code`` (and the retry-after
hint) in trailing metadata, so the device rebuilds the same error type as over HTTP.
A caller without a valid key is refused after its first message is read (or
``REFUSAL_READ_WAIT_S``), never while its write is in flight (see ``Generate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common.errors import (
    InvalidRequest,
    PDError,
    RequestTimeout,
    RequestTooLarge,
    Unauthorized,
)
from common.messages import GenerateRequest
from common.proto import pd_pb2 as pb
from common.wire import (
    ERROR_CODE_TRAILER,
    REQUEST_SECRET_HEADER,
    RETRY_AFTER_TRAILER,
    event_to_proto,
    request_from_proto,
)

from .config import SecurityConfig
from .engine_api import CloudEngine
from .front_end import new_secret, submit
from .security import check_bearer

log = logging.getLogger(__name__)

SERVICE_NAME = "pd.v1.PDService"
# How long a refused (unauthenticated) caller may take to send its request before the refusal.
REFUSAL_READ_WAIT_S = 2.0


@dataclass(frozen=True)
class MalformedMessage:
    error: InvalidRequest


def device_message_parser(max_bytes: int):
    """Bytes to a ``DeviceMessage``, or a ``MalformedMessage`` saying what is wrong with them."""

    def parse(data: bytes) -> pb.DeviceMessage | MalformedMessage:
        if len(data) > max_bytes:
            return MalformedMessage(
                RequestTooLarge(f"message exceeds {max_bytes} bytes; send a shorter prompt")
            )
        try:
            return pb.DeviceMessage.FromString(data)
        except DecodeError as err:
            return MalformedMessage(
                InvalidRequest(f"malformed protobuf ({err}); send a pd.v1.DeviceMessage")
            )

    return parse


async def abort_with(context: grpc.aio.ServicerContext, err: PDError) -> None:
    """The one place a ``PDError`` becomes a gRPC status (raises)."""
    metadata: tuple[tuple[str, str], ...] = ((ERROR_CODE_TRAILER, err.code),)
    retry_after_s = getattr(err, "retry_after_s", None)
    if retry_after_s is not None:
        metadata += ((RETRY_AFTER_TRAILER, f"{retry_after_s:g}"),)
    await context.abort(err.grpc_code, err.message, trailing_metadata=metadata)


async def read_first(messages: AsyncIterator, wait_s: float):
    """The stream's first message; None when the stream closed first; ``RequestTimeout`` when
    none came within ``wait_s`` (a stalled caller holds no handler for ever)."""
    try:
        return await asyncio.wait_for(anext(messages), wait_s)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise RequestTimeout(
            f"no request within {wait_s:g} s; send the request as the stream's first message"
        ) from None


def request_of(first) -> GenerateRequest:
    if first is None:
        raise InvalidRequest("the stream closed before a request; send a request first")
    if isinstance(first, MalformedMessage):
        raise first.error
    if first.WhichOneof("kind") != "request":
        raise InvalidRequest("the first DeviceMessage must carry a request (handoff comes later)")
    return request_from_proto(first.request)


def authorization_of(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return value
    return None


class PDServicer:
    def __init__(self, engine: CloudEngine, security: SecurityConfig) -> None:
        self.engine = engine
        self.security = security

    async def Generate(  # noqa: N802 (gRPC method name)
        self, messages: AsyncIterator, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CloudMessage]:
        secret = new_secret()
        owner = "grpc:" + secret  # only this stream's handoffs reach its request
        try:
            try:
                check_bearer(self.security.api_keys, authorization_of(context))
            except Unauthorized:
                # Take the request off the wire before refusing: a grpc.aio client whose first
                # write is still in flight when the call ends is told "INTERNAL: Internal error
                # from Core" instead of this status (grpc/grpc#36066; 1 in 10 calls here).
                with contextlib.suppress(RequestTimeout):
                    await read_first(messages, REFUSAL_READ_WAIT_S)
                raise
            first = await read_first(messages, self.security.request_read_timeout_s)
            stream = await submit(self.engine, request_of(first), owner)
        except PDError as err:
            await abort_with(context, err)
            return
        await context.send_initial_metadata(((REQUEST_SECRET_HEADER, secret),))  # "accepted"
        reader = asyncio.create_task(self._read_handoffs(messages, stream.request_id, owner))
        try:
            async for event in stream:
                yield event_to_proto(event)
        finally:
            reader.cancel()
            stream.cancel()

    async def _read_handoffs(self, messages: AsyncIterator, request_id: str, owner: str) -> None:
        """Later device messages: a handoff stops the request. Anything else, and handoffs after
        the request ended, are logged once per stream and then only counted, so a device that
        floods its stream cannot flood the log."""
        ignored = late = 0
        try:
            async for msg in messages:
                if isinstance(msg, MalformedMessage) or msg.WhichOneof("kind") != "handoff":
                    ignored += 1
                    if ignored == 1:
                        log.warning(
                            "request %s: ignored a device message that is not a handoff",
                            request_id,
                        )
                    continue
                try:
                    self.engine.handoff(request_id, max(0, msg.handoff.at_index), owner)
                except PDError as err:  # the request ended meanwhile and was forgotten
                    late += 1
                    if late == 1:
                        log.info("request %s: late handoff ignored: %s", request_id, err.message)
        finally:
            if ignored > 1 or late > 1:
                log.warning(
                    "request %s: ignored %d device messages that were not handoffs and %d late "
                    "handoffs on its stream",
                    request_id,
                    ignored,
                    late,
                )


def create_grpc_server(
    engine: CloudEngine, address: str, security: SecurityConfig | None = None
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A grpc.aio server (not started) bound to ``address``, with PDService and health (open)."""
    security = security or SecurityConfig()
    # gRPC's own cap sits above ours, so an oversized message gets our RequestTooLarge.
    max_grpc_bytes = 4 * security.max_body_bytes + 1024
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_grpc_bytes)])
    handler = grpc.stream_stream_rpc_method_handler(
        PDServicer(engine, security).Generate,
        request_deserializer=device_message_parser(security.max_body_bytes),
        response_serializer=pb.CloudMessage.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Generate": handler}),)
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(address)
    return server, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer) -> None:
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
