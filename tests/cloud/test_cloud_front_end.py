"""The front ends' shared admission path, with a fake model whose tokenizer blocks on purpose."""

from __future__ import annotations

import asyncio
import threading

from cloud_server.config import EngineConfig
from cloud_server.front_end import tokenized
from common.messages import GenerateRequest


class BlockingTokenizer:
    """Two one-byte tokens; ``encode`` (on the model) blocks until released."""

    def __len__(self) -> int:
        return 2

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return ["a", "b"][: len(ids)]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)


class BlockingModel:
    tokenizer = BlockingTokenizer()
    max_context = 1024

    def __init__(self) -> None:
        self.is_encoding = threading.Event()
        self.release = threading.Event()

    def encode(self, prompt=None, messages=None, raw=False) -> list[int]:
        self.is_encoding.set()
        assert self.release.wait(10.0), "never released: the event loop was blocked"
        return [0, 1, 0]


class FakeEngine:
    def __init__(self) -> None:
        self.model = BlockingModel()
        self.config = EngineConfig()


def test_tokenizing_runs_off_the_event_loop():
    engine = FakeEngine()
    request = GenerateRequest(prompt="ab" * 100, max_tokens=4, cloud_tokens=3)

    async def scenario() -> GenerateRequest:
        task = asyncio.create_task(tokenized(request, engine))
        assert await asyncio.to_thread(engine.model.is_encoding.wait, 10.0)
        await asyncio.sleep(0.01)  # the loop still runs other work while the prompt encodes
        engine.model.release.set()
        return await task

    out = asyncio.run(scenario())
    assert out.prompt_ids == [0, 1, 0] and out.prompt is None and out.max_tokens == 4
