"""The cloud tests' requests and the secured cloud's settings (the pd stream readers are in
``tests/support.py``)."""

from __future__ import annotations

from pathlib import Path

# The secured cloud (conftest ``secured_cloud``): its key, operator settings and body limit.
API_KEY = "test-key-1"
SETTINGS = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "settings.json"
MAX_BODY_BYTES = 8192
READ_TIMEOUT_S = 1.0  # a body or first gRPC message must be in within this

STORY = "Once upon a time"  # raw: the model keeps telling the story, no early EOS


def story(**fields) -> dict:
    """A short raw request body; ``fields`` override."""
    return {"prompt": STORY, "raw": True, "max_tokens": 8, "cloud_tokens": 7} | fields
