"""Helpers for the vLLM engine tests (the pd stream readers are in ``tests/support.py``)."""

from __future__ import annotations

import threading

import httpx

MAX_CONCURRENT = 2  # the shared vLLM cloud's --max-concurrent
STORY = {"prompt": "Once upon a time", "raw": True}  # keeps telling the story: no early EOS


def wait_idle(url: str, tries: int = 100) -> bool:
    for _ in range(tries):
        if httpx.get(url + "/health").json()["active_requests"] == 0:
            return True
        threading.Event().wait(0.1)
    return False
