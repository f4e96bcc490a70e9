"""Session fixtures: device-only references from scratch (``device_only``, ``make_client``:
``tests/conftest.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def reference(device_only):
    """Device-only decoding of a turn's whole prompt from scratch, cached per input."""
    cache: dict = {}

    def get(prompt_ids: list[int], max_tokens: int, sampling=None) -> list[int]:
        key = (tuple(prompt_ids), max_tokens, sampling)
        if key not in cache:
            result = device_only.generate(
                prompt_ids=prompt_ids, max_tokens=max_tokens, mode="device", sampling=sampling
            )
            cache[key] = result.token_ids
        return cache[key]

    return get
