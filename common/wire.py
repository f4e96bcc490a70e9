"""Converters between ``common.messages`` and their protobuf twins in ``proto/pd.proto``."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .errors import InvalidRequest
from .messages import (
    ChatMessage,
    End,
    EndReason,
    FirstToken,
    GenerateRequest,
    Handoff,
    KeepSet,
    Token,
    Usage,
)
from .proto import pd_pb2 as pb

Event = KeepSet | FirstToken | Token | End
M = TypeVar("M", bound=BaseModel)

# Out-of-band fields both transports carry (an HTTP header, gRPC metadata).
REQUEST_SECRET_HEADER = "x-pd-request-secret"  # proves a handoff comes from the request's caller
ERROR_CODE_TRAILER = "pd-error-code"  # gRPC: the ``PDError.code``, so the type survives the wire
RETRY_AFTER_TRAILER = "retry-after-s"  # gRPC: the overload hint (HTTP uses Retry-After)


def validation_message(err: ValidationError) -> str:
    """One readable line per problem: ``field: what is wrong``."""
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "request"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown parameter; this server does not implement it"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def parse_body(model: type[M], body: bytes) -> M:
    """A JSON body as ``model``; malformed JSON (too deep included) and schema errors become
    ``InvalidRequest`` with a readable message. Every HTTP front end and the gateway parse here."""
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        raise InvalidRequest(validation_message(err)) from None
    except RecursionError:  # pydantic's parser limits depth itself; this is a safety net
        raise InvalidRequest("request: JSON nested too deeply") from None


def request_to_proto(req: GenerateRequest) -> pb.DeviceMessage:
    if req.logprobs is not None or req.prompt_logprobs is not None:
        raise InvalidRequest("logprobs travel over HTTP only; use the HTTP transport for them")
    s = req.sampling
    msg = pb.GenerateRequest(
        request_id=req.request_id,
        raw=req.raw,
        max_tokens=req.max_tokens,
        cloud_tokens=req.cloud_tokens,
        refine_ratio=req.refine_ratio,
        sampling=pb.SamplingParams(
            temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, seed=s.seed
        ),
        fingerprint=req.fingerprint or "",
        num_device_cached_tokens=req.num_device_cached_tokens,
    )
    if req.prompt_ids is not None:
        msg.prompt_ids.ids.extend(req.prompt_ids)
    elif req.prompt is not None:
        msg.prompt = req.prompt
    else:
        msg.messages.messages.extend(
            pb.ChatMessage(role=m.role, content=m.content) for m in req.messages or []
        )
    return pb.DeviceMessage(request=msg)


def request_from_proto(msg: pb.GenerateRequest) -> GenerateRequest:
    """Raises ``InvalidRequest`` with a readable message when a field is out of range."""
    source = msg.WhichOneof("prompt_source")
    fields: dict = {
        "raw": msg.raw,
        "max_tokens": msg.max_tokens,
        "cloud_tokens": msg.cloud_tokens,
        "refine_ratio": msg.refine_ratio,
        "fingerprint": msg.fingerprint or None,
        "num_device_cached_tokens": msg.num_device_cached_tokens,
        "sampling": {
            "temperature": msg.sampling.temperature,
            "top_p": msg.sampling.top_p or 1.0,
            "top_k": msg.sampling.top_k,
            "seed": msg.sampling.seed,
        },
    }
    if msg.request_id:
        fields["request_id"] = msg.request_id
    if source == "prompt_ids":
        fields["prompt_ids"] = list(msg.prompt_ids.ids)
    elif source == "prompt":
        fields["prompt"] = msg.prompt
    elif source == "messages":
        fields["messages"] = [
            ChatMessage(role=m.role, content=m.content) for m in msg.messages.messages
        ]
    try:
        return GenerateRequest.model_validate(fields)
    except ValidationError as err:
        raise InvalidRequest(validation_message(err)) from None


def handoff_to_proto(handoff: Handoff) -> pb.DeviceMessage:
    return pb.DeviceMessage(handoff=pb.Handoff(at_index=handoff.at_index))


def event_to_proto(event: Event) -> pb.CloudMessage:
    if isinstance(event, KeepSet):
        return pb.CloudMessage(
            keep_set=pb.KeepSet(
                is_available=event.is_available,
                kept_positions=event.kept_positions,
                reason=event.reason,
            )
        )
    if isinstance(event, FirstToken):
        fields = event.model_dump(exclude={"type", "logprob", "prompt_logprobs"})
        return pb.CloudMessage(first_token=pb.FirstToken(**fields))
    if isinstance(event, Token):
        return pb.CloudMessage(token=pb.Token(**event.model_dump(exclude={"type", "logprob"})))
    usage = pb.Usage(**event.usage.model_dump())
    return pb.CloudMessage(
        end=pb.End(reason=event.reason.value, usage=usage, message=event.message)
    )


def event_from_proto(msg: pb.CloudMessage) -> Event:
    kind = msg.WhichOneof("kind")
    if kind == "keep_set":
        k = msg.keep_set
        return KeepSet(
            is_available=k.is_available, kept_positions=list(k.kept_positions), reason=k.reason
        )
    if kind == "first_token":
        f = msg.first_token
        return FirstToken(
            token_id=f.token_id,
            text=f.text,
            prompt_tokens=f.prompt_tokens,
            queue_s=f.queue_s,
            prefill_s=f.prefill_s,
        )
    if kind == "token":
        return Token(index=msg.token.index, token_id=msg.token.token_id, text=msg.token.text)
    assert kind == "end", f"unknown cloud message kind {kind!r}"
    u = msg.end.usage
    usage = Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        queue_s=u.queue_s,
        prefill_s=u.prefill_s,
        busy_s=u.busy_s,
        cached_tokens=u.cached_tokens,
    )
    return End(reason=EndReason(msg.end.reason), usage=usage, message=msg.end.message)
