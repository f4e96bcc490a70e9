"""A cloud server with API keys and operator settings on, shared by the OpenAI and security tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from device_client.embedded import EmbeddedCloud, start_cloud

API_KEY = "test-key-1"
SETTINGS = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "settings.json"
MAX_BODY_BYTES = 8192


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
    )
    yield cloud
    cloud.stop()
