"""A cloud server with API keys and operator settings on, shared by the OpenAI and security tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cloud_clients import API_KEY, MAX_BODY_BYTES, READ_TIMEOUT_S, SETTINGS

from device_client.embedded import EmbeddedCloud, start_cloud


@pytest.fixture(scope="session")
def secured_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCloud]:
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"# operator keys\n{API_KEY}\n\nother-key  # rotated next week\n")
    cloud = start_cloud(
        "--api-key-file",
        str(keys),
        "--settings",
        str(SETTINGS),
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
        "--max-prompt-tokens",
        "256",
        "--request-read-timeout-s",
        str(READ_TIMEOUT_S),
    )
    yield cloud
    cloud.stop()
