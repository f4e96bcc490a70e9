"""Probes shared by the server tests: read a Prometheus sample, wait for a condition."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx


def metric(base_url: str, name: str, labels: str = "") -> float:
    """One sample from /metrics, e.g. ``metric(url, "pdd_requests_total", 'reason="eos"')``."""
    text = httpx.get(base_url + "/metrics", timeout=10.0).text
    key = f"{name}{{{labels}}}" if labels else name
    match = re.search(rf"^{re.escape(key)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
