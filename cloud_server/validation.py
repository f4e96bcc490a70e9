"""Request checks before any model work: each failure is a typed error that says what to fix."""

from __future__ import annotations

import functools

from common.errors import FingerprintMismatch, InvalidRequest, PromptTooLong
from common.messages import GenerateRequest
from common.model import LoadedModel

from .config import EngineConfig


@functools.lru_cache(maxsize=4)
def max_token_bytes(tokenizer) -> int:
    """The most UTF-8 bytes one token of this vocabulary (special tokens included) stands for."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return max(len(tokenizer.convert_tokens_to_string([t]).encode()) for t in tokens if t)


def check_prompt_size(request: GenerateRequest, loaded: LoadedModel, config: EngineConfig) -> None:
    """Refuse a text prompt that cannot fit before tokenizing it (cheap: its byte length).

    A token stands for at most ``max_token_bytes`` bytes, so a text of B bytes is at least
    B / max_token_bytes tokens; a chat template only adds tokens.
    """
    if request.prompt_ids is not None:
        return
    texts = [request.prompt or ""] + [m.content for m in request.messages or []]
    num_bytes = sum(len(t.encode()) for t in texts)
    max_prompt = config.max_prompt_tokens or loaded.max_context - 1
    min_tokens = -(-num_bytes // max_token_bytes(loaded.tokenizer))
    if min_tokens > max_prompt:
        raise PromptTooLong(
            f"prompt is {num_bytes} bytes, at least {min_tokens} tokens; this server accepts at "
            f"most {max_prompt} tokens; shorten the prompt"
        )


def prompt_ids_for(request: GenerateRequest, loaded: LoadedModel) -> list[int]:
    """The prompt as token ids (ids pass through; text and messages are encoded here)."""
    if request.prompt_ids is not None:
        ids = list(request.prompt_ids)
        vocab_size = len(loaded.tokenizer)
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise InvalidRequest(
                f"prompt_ids: {len(bad)} id(s) outside the vocabulary [0, {vocab_size}), "
                f"e.g. {bad[0]}; tokenize with the cloud's model"
            )
        return ids
    messages = [m.model_dump() for m in request.messages] if request.messages else None
    ids = loaded.encode(prompt=request.prompt, messages=messages, raw=request.raw)
    if not ids:
        raise InvalidRequest("prompt: the text encodes to no tokens; send some text")
    return ids


def max_new_tokens_for(request: GenerateRequest) -> int:
    """The cloud generates the first token plus at most N more, never past max_tokens."""
    return min(request.max_tokens, 1 + request.cloud_tokens)


def check_request(
    request: GenerateRequest,
    prompt_ids: list[int],
    loaded: LoadedModel,
    config: EngineConfig,
) -> None:
    if request.fingerprint is not None and request.fingerprint != loaded.fingerprint:
        raise FingerprintMismatch(
            f"fingerprint {request.fingerprint!r} does not match the cloud model "
            f"{loaded.name!r} ({loaded.fingerprint!r}); run the same model and tokenizer on the "
            "device, or omit the fingerprint"
        )
    num_prompt = len(prompt_ids)
    max_prompt = config.max_prompt_tokens or loaded.max_context - 1
    if num_prompt > max_prompt:
        raise PromptTooLong(
            f"prompt is {num_prompt} tokens; this server accepts at most {max_prompt} "
            f"(model context {loaded.max_context}); shorten the prompt"
        )
    num_new = max_new_tokens_for(request)
    if num_prompt + num_new > loaded.max_context:
        raise PromptTooLong(
            f"prompt ({num_prompt} tokens) plus {num_new} answer tokens exceed the model context "
            f"of {loaded.max_context}; shorten the prompt or lower max_tokens / cloud_tokens"
        )
