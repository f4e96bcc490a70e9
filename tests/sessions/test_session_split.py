"""The split per turn: the bucket follows the tokens the device must prefill, so a short
follow-up is answered by the device alone and a pasted document still gets the cloud's first
token; a cloud that fails mid-conversation leaves the session consistent."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from support import fast_pacing

from benchmarks.data.conversation import chapter
from common.errors import CloudUnavailable
from common.messages import FirstToken, Token
from common.settings import Bucket
from device_client.client import DeviceClient
from device_client.embedded import free_port
from device_client.types import Mode

DEVICE_ALONE = Bucket(
    max_prompt_len=64, use_cloud=False, cloud_tokens=0, min_interval_s=0.0, max_interval_s=0.05
)
MAX_TOKENS = 6


def check_turn(chat, result, reference) -> None:
    prompt = chat.token_ids[: chat.turns[-1].prompt_tokens]
    assert result.token_ids == reference(prompt, MAX_TOKENS)


def test_short_follow_ups_go_device_only_and_documents_get_the_cloud(
    cloud_server, make_client, reference
):
    # A device 6x slower: a 240-token chapter takes it several times the cloud's prefill.
    client = make_client(
        cloud_server.http_url, device_slowdown=6.0, settings=fast_pacing(DEVICE_ALONE)
    )
    chat = client.session(system="You answer in one short sentence.")
    hello = chat.generate("Hello! I will show you a story.", max_tokens=MAX_TOKENS)
    assert hello.mode is Mode.DEVICE and hello.cloud_tokens == 0  # under 64 tokens, no cache
    check_turn(chat, hello, reference)

    doc = f"Here it is.\n\n{chapter('Jonah', 2)}\n\nWhere is Jonah?"
    pasted = chat.generate(doc, max_tokens=MAX_TOKENS, cloud_tokens=2)
    assert pasted.mode is Mode.PD and pasted.fallback is None
    # The history up to the last answer token, which was shown but never fed (max_tokens).
    assert pasted.cached_prompt_tokens == chat.turns[0].prompt_tokens + len(hello.tokens) - 1
    assert chat.last_answer.request.num_device_cached_tokens == pasted.cached_prompt_tokens
    assert pasted.sources[0] == "cloud" and pasted.handoff_index >= 1  # the cloud's TTFT
    check_turn(chat, pasted, reference)

    follow_up = chat.generate("Is he alive?", max_tokens=MAX_TOKENS)
    assert follow_up.mode is Mode.DEVICE, "a short follow-up needs no cloud"
    assert (
        follow_up.prompt_tokens > 300
        and follow_up.prompt_tokens - follow_up.cached_prompt_tokens < 20
    )
    check_turn(chat, follow_up, reference)


def test_a_cloud_that_goes_away_leaves_the_session_consistent(cloud_server, make_client, reference):
    client = make_client(cloud_server.http_url)
    chat = client.session()
    first = chat.generate("Name a large animal.", max_tokens=MAX_TOKENS, mode="cloud")
    assert first.fallback is None and set(first.sources) == {"cloud"}
    check_turn(chat, first, reference)
    # The cloud is gone between turns: every later turn is finished by the device.
    client.config = replace(client.config, cloud_url=f"http://127.0.0.1:{free_port()}")
    for message, mode in (("Where does it live?", "cloud"), ("What does it eat?", "pd")):
        result = chat.generate(message, max_tokens=MAX_TOKENS, mode=mode)
        assert result.fallback, "the device finished the turn"
        assert set(result.sources) == {"device"}
        check_turn(chat, result, reference)
    assert chat.turns[-1].cached_prompt_tokens > chat.turns[0].prompt_tokens


class DyingCloud:
    """A fake cloud (``open_cloud``) that sends the right first tokens of each turn, then breaks
    mid-stream; it learns the right tokens from device-only decoding from scratch."""

    def __init__(self, reference, num_sent: int) -> None:
        self._reference, self._num_sent = reference, num_sent
        self._request = None

    async def __call__(self, request, config):
        self._request = request
        return self

    async def events(self):
        req = self._request
        want = await asyncio.to_thread(self._reference, req.prompt_ids, req.max_tokens)
        yield FirstToken(
            token_id=want[0], text="", prompt_tokens=len(req.prompt_ids), queue_s=0, prefill_s=0
        )
        for index in range(1, self._num_sent):
            yield Token(index=index, token_id=want[index], text="")
        raise CloudUnavailable("the cloud died mid-stream")

    async def handoff(self, at_index: int) -> None:
        pass

    async def aclose(self) -> None:
        pass


def test_a_cloud_that_dies_mid_stream_leaves_the_session_consistent(loaded_model, reference):
    client = DeviceClient(
        "http://127.0.0.1:9",
        model=loaded_model,
        settings=fast_pacing(),
        device_slowdown=3.0,
        open_cloud=DyingCloud(reference, num_sent=2),
    )
    messages = ("Name a large animal.", "Where does it live?", "What does it eat?")
    try:
        # A device-only pass first: the same prompts, so the fake cloud's tokens come at once.
        warm = client.session()
        for message in messages:
            check_turn(
                warm, warm.generate(message, max_tokens=MAX_TOKENS, mode="device"), reference
            )
        chat = client.session()
        for message in messages:
            result = chat.generate(message, max_tokens=MAX_TOKENS, mode="pd")
            assert result.fallback and "died mid-stream" in result.fallback
            assert result.sources[0] == "cloud", "the cloud's tokens before it died are shown"
            check_turn(chat, result, reference)
        assert chat.turns[-1].cached_prompt_tokens > chat.turns[1].prompt_tokens
    finally:
        client.close()
