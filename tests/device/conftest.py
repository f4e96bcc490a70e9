"""Device-side fixtures: a DeviceClient factory on the shared model, reference answers."""

from __future__ import annotations

import pytest
from device_helpers import pacing

from device_client.client import DeviceClient


@pytest.fixture(scope="session")
def device_only(loaded_model):
    """A device with no cloud at all; the reference every mode must match."""
    return DeviceClient(None, model=loaded_model)


@pytest.fixture(scope="session")
def reference(device_only):
    """Device-only answers, cached per (prompt, max_tokens, sampling)."""
    cache: dict = {}

    def get(prompt: str, max_tokens: int, sampling=None) -> list[int]:
        key = (prompt, max_tokens, sampling)
        if key not in cache:
            result = device_only.generate(
                prompt, max_tokens=max_tokens, mode="device", sampling=sampling
            )
            cache[key] = result.token_ids
        return cache[key]

    return get


@pytest.fixture
def make_client(loaded_model):
    """``make_client(url, **ClientConfig fields)`` sharing the session's model."""
    clients: list[DeviceClient] = []

    def make(url: str | None, **options) -> DeviceClient:
        options.setdefault("settings", pacing())
        client = DeviceClient(url, model=loaded_model, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
