"""Session fixtures: clients on the shared model, device-only references from scratch."""

from __future__ import annotations

import pytest
from session_helpers import fast_pacing

from device_client.client import DeviceClient


@pytest.fixture(scope="session")
def scratch(loaded_model):
    """A device with no cloud and no session: the reference every turn must match."""
    client = DeviceClient(None, model=loaded_model)
    yield client
    client.close()


@pytest.fixture(scope="session")
def reference(scratch):
    """Device-only decoding of a turn's whole prompt from scratch, cached per input."""
    cache: dict = {}

    def get(prompt_ids: list[int], max_tokens: int, sampling=None) -> list[int]:
        key = (tuple(prompt_ids), max_tokens, sampling)
        if key not in cache:
            result = scratch.generate(
                prompt_ids=prompt_ids, max_tokens=max_tokens, mode="device", sampling=sampling
            )
            cache[key] = result.token_ids
        return cache[key]

    return get


@pytest.fixture
def make_client(loaded_model):
    """``make_client(url, **ClientConfig fields)`` sharing the session's model."""
    clients: list[DeviceClient] = []

    def make(url: str | None, **options) -> DeviceClient:
        options.setdefault("settings", fast_pacing())
        client = DeviceClient(url, model=loaded_model, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
