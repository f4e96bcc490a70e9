"""Shared fixtures: real cloud servers on loopback, the real bundled model (loaded once), and
device clients on it (shared helpers: ``tests/support.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import fast_pacing

from device_client import embedded
from device_client.embedded import EmbeddedCloud


@pytest.fixture(scope="session")
def cloud_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCloud]:
    """One default cloud server (max 4 concurrent requests) shared by the session."""
    server = embedded.start_cloud(log_dir=tmp_path_factory.mktemp("cloud"))
    yield server
    server.stop()


@pytest.fixture
def start_cloud(tmp_path: Path) -> Iterator[Callable[..., EmbeddedCloud]]:
    """Factory: ``start_cloud("--max-concurrent", "1")``; every server started is stopped after."""
    started: list[EmbeddedCloud] = []

    def start(*args: str) -> EmbeddedCloud:
        server = embedded.start_cloud(*args, log_dir=tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def loaded_model():
    """The bundled model in this process, on one thread (the machine's cores are shared)."""
    from common.model import load_model
    from common.platform import set_threads

    set_threads(1)
    return load_model()


@pytest.fixture(scope="session")
def device_only(loaded_model):
    """A device with no cloud at all; the reference every mode must match."""
    from device_client.client import DeviceClient

    client = DeviceClient(None, model=loaded_model)
    yield client
    client.close()


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
    """``make_client(url, **ClientConfig fields)`` sharing the session's model (fast pacing unless
    ``settings`` is given); every client made is closed after the test."""
    from device_client.client import DeviceClient

    clients: list = []

    def make(url: str | None, **options):
        options.setdefault("settings", fast_pacing())
        client = DeviceClient(url, model=loaded_model, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda`` / ``npu`` tests where that hardware is absent (asked once, at collection)."""
    from common.platform import available_platforms

    present = set(available_platforms())
    for item in items:
        for kind in ("cuda", "npu"):
            if kind in item.keywords and kind not in present:
                item.add_marker(pytest.mark.skip(reason=f"no {kind} device on this machine"))
