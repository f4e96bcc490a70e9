"""Multi-turn sessions: a conversation keeps its token ids and the device's KV cache across turns.

    chat = client.session(system="You are terse.")
    print(chat.generate("Summarise this: ...").text)
    for tok in chat.stream("And in one line?"):
        ...

Each turn's prompt is the conversation's ids so far plus the new user turn (``chat_turns.py``:
token ids, never re-tokenized text). The device starts that turn's ``LocalSession`` from the
cache of the longest prefix it holds, so it prefills only the uncached tokens; the settings bucket
is chosen by that work (``SplitSettings.bucket_for``), so a short follow-up may be answered by
the device alone and a long pasted document still gets the cloud's first token. The cloud is told
how many prompt tokens the device already has (``num_device_cached_tokens``).

After a turn the history is the prompt plus the answer's ids *as shown* (a stream stopped early
keeps what was shown) plus the template's closing ids. The cache is cut to the longest prefix of
that history it holds, at the start of the next turn and on the worker thread, so a forward still
running from the last turn finishes first. A cloud that fails mid-turn changes nothing here: the
device finishes the answer (``fallback``) and the turn is recorded like any other.

Memory: the KV of the bundled SmolLM2-135M in fp32 is 46.1 MB (43.9 MiB) per 1,000 tokens
(30 layers x K and V x 3 heads x 64 dims x 4 bytes = 46,080 bytes a token; measured in
``tests/sessions``). A client keeps the caches of its ``max_sessions`` most recently used
sessions; an evicted session keeps its ids and prefills its whole history again on its next turn.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from common.errors import InvalidRequest
from common.model import LoadedModel

from .answer import Answer
from .chat_turns import NextPrompt, TurnBuilder
from .config import ClientConfig
from .local_runtime import KVPrefix, LocalSession, common_prefix_len
from .types import DEFAULT_MAX_TOKENS, DisplayedToken, GenerationResult


class DeviceClient(Protocol):
    """What a session uses of its ``client.DeviceClient`` (named here: no import cycle)."""

    model: LoadedModel
    config: ClientConfig
    _executor: Executor

    def answer(self, prompt: str | None = None, *, prefix: KVPrefix | None = None, **kwargs): ...

    def stream_answer(self, answer) -> Iterator[DisplayedToken]: ...

    def _sync_loop(self) -> asyncio.AbstractEventLoop: ...


class ContextOverflow(InvalidRequest):
    """The conversation no longer fits the model's context."""


@dataclass(frozen=True)
class TurnRecord:
    prompt_tokens: int  # the whole history sent
    cached_prompt_tokens: int  # of which the device's cache already held
    answer_tokens: int  # shown
    rerendered: str | None  # why the template's own rendering was used, or None


@dataclass(frozen=True)
class _Plan:
    prompt: NextPrompt
    prefix: KVPrefix | None


class Session:
    def __init__(self, client: DeviceClient, pool: SessionPool, system: str | None) -> None:
        self._client, self._pool = client, pool
        self.system = system
        self._turns = TurnBuilder(client.model.tokenizer, system)
        self.token_ids: list[int] = []  # the conversation, the last answer's closing ids included
        self.messages: list[dict] = []  # the same as text (user and assistant turns)
        self._answer_spans: list[tuple[int, int]] = []  # where answers sit in ``token_ids``
        self._kv: KVPrefix | None = None  # the cache of a prefix of ``token_ids``
        self._last_local: LocalSession | None = None  # the last turn's; its cache becomes _kv
        self._is_busy = False
        self.is_closed = False
        self.turns: list[TurnRecord] = []
        self.last_answer: Answer | None = None

    @property
    def template_check(self):
        """Whether turn-by-turn ids equal the template's rendering (and why not)."""
        return self._turns.check

    @property
    def num_cached_tokens(self) -> int:
        """Tokens of the conversation in the device's cache (approximate mid-turn)."""
        if self._last_local is not None:
            return self._last_local.cached_prefix_len(self.token_ids)
        return len(self._kv) if self._kv is not None else 0

    @property
    def kv_bytes(self) -> int:
        if self._last_local is not None:
            return KVPrefix(self._last_local.cache, []).nbytes
        return self._kv.nbytes if self._kv is not None else 0

    def close(self) -> None:
        """Free the cache; the session takes no more turns."""
        self.drop_kv()
        self.is_closed = True
        self._pool.forget(self)

    def drop_kv(self) -> None:
        """Forget the cache (eviction); the next turn prefills the whole history."""
        self._kv = self._last_local = None

    # -- one turn ---------------------------------------------------------------------------

    async def astream(self, message: str, **options) -> AsyncIterator[DisplayedToken]:
        """One turn; ``options`` are those of ``DeviceClient.generate`` (max_tokens, mode, ...)."""
        if self.is_closed:
            raise InvalidRequest("this session is closed: start a new one with client.session()")
        if self._is_busy:
            raise InvalidRequest("this session is already answering: one turn at a time")
        if not message.strip():
            raise InvalidRequest("message is empty: send some text")
        options.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        self._is_busy = True
        try:
            run = asyncio.get_running_loop().run_in_executor
            plan = await run(self._client._executor, self._plan, message, options["max_tokens"])
            try:
                answer = self._client.answer(
                    prompt_ids=plan.prompt.token_ids, prefix=plan.prefix, **options
                )
            except BaseException:
                self._kv = plan.prefix  # still a prefix of the history: nothing is lost
                raise
            self.last_answer = answer
            self._last_local = answer.session
            self._pool.touch(self)
            is_failed, tokens = True, aiter(answer)
            try:
                async for tok in tokens:
                    yield tok
                is_failed = False
            except (GeneratorExit, asyncio.CancelledError):
                is_failed = False  # stopped by the caller: the history keeps what was shown
                raise
            finally:
                await tokens.aclose()  # stop the device and the cloud now, not at GC
                if is_failed:
                    self.drop_kv()  # a forward may have failed half-way: trust no cache
                else:
                    self._commit(message, plan, answer)
        finally:
            self._is_busy = False

    async def agenerate(self, message: str, **options) -> GenerationResult:
        async for _ in self.astream(message, **options):
            pass
        assert self.last_answer is not None and self.last_answer.result is not None
        return self.last_answer.result

    def stream(self, message: str, **options) -> Iterator[DisplayedToken]:
        yield from self._client.stream_answer(self.astream(message, **options))

    def generate(self, message: str, **options) -> GenerationResult:
        return self._client._sync_loop().run_until_complete(self.agenerate(message, **options))

    # -- bookkeeping ------------------------------------------------------------------------

    def _plan(self, message: str, max_tokens: int) -> _Plan:
        """The turn's prompt and the cache for its longest cached prefix (on the worker thread,
        so the last turn's forwards are done)."""
        if self.token_ids:
            prompt = self._turns.next_prompt(
                self.token_ids, self.messages, self._answer_spans, message
            )
        else:
            prompt = NextPrompt(self._turns.first_prompt(message))
        ids, limit = prompt.token_ids, self._client.model.max_context
        if len(ids) + max_tokens > limit:
            raise ContextOverflow(
                f"this conversation is {len(self.token_ids)} tokens; with the new message the "
                f"prompt is {len(ids)} and with max_tokens {max_tokens} it exceeds the model's "
                f"context of {limit} tokens. Start a new session (client.session(), perhaps with "
                "a summary of this one as its system prompt) or ask for fewer max_tokens."
            )
        local, self._last_local = self._last_local, None  # an eviction may clear it meanwhile
        kv, self._kv = self._kv, None
        if local is not None:
            kv = local.kv_prefix(self.token_ids)
        if kv is not None:  # keep the shared part; the last prompt token is always prefilled
            kv = kv.keep(min(common_prefix_len(kv.token_ids, ids), len(ids) - 1))
        return _Plan(prompt, kv)

    def _commit(self, message: str, plan: _Plan, answer: Answer) -> None:
        shown = [t.token_id for t in answer.tokens]
        prompt_ids = plan.prompt.token_ids
        if plan.prompt.rerendered is not None:
            self._answer_spans = []  # the rendered prompt holds earlier answers as text renders
        start = len(prompt_ids)
        self._answer_spans.append((start, start + len(shown)))
        self.token_ids = prompt_ids + shown + self._turns.closing_ids
        self.messages += [
            {"role": "user", "content": message},
            {"role": "assistant", "content": self._turns.decode(shown)},
        ]
        cached = len(plan.prefix) if plan.prefix is not None else 0
        self.turns.append(TurnRecord(len(prompt_ids), cached, len(shown), plan.prompt.rerendered))


class SessionPool:
    """The sessions whose caches a client keeps: at most ``max_sessions``, least recently used
    evicted first."""

    def __init__(self, client: DeviceClient) -> None:
        self._client = client
        self._held: OrderedDict[int, Session] = OrderedDict()

    def open(self, system: str | None) -> Session:
        return Session(self._client, self, system)

    def touch(self, session: Session) -> None:
        self._held[id(session)] = session
        self._held.move_to_end(id(session))
        while len(self._held) > self._client.config.max_sessions:
            _, oldest = self._held.popitem(last=False)
            oldest.drop_kv()

    def forget(self, session: Session) -> None:
        self._held.pop(id(session), None)

    def __len__(self) -> int:
        return len(self._held)
