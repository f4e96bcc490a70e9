"""The local runtime's progress snapshots, which the speed controller plans with."""

from __future__ import annotations

import time

from device_client.local_runtime import LocalSession


def test_progress_counts_the_chunk_in_flight_as_not_done(loaded_model):
    """While a chunk runs, its tokens are still to do: leaving them out made the controller's
    estimate of the device's first own token one chunk early (a stall at the handoff)."""
    seen = []

    def clock() -> float:  # a real clock that also looks at the session when a forward starts
        if not session._lock.locked():
            seen.append((session.progress(), session.is_prompt_done))
        return time.monotonic()

    session = LocalSession(loaded_model, list(range(100, 110)), chunk_tokens=4, clock=clock)
    while not session.is_prompt_done:
        seen.clear()
        done_before = session.progress().prompt_done
        session.prefill_chunk()
        during, is_done = seen[0]  # snapshotted as the chunk's forward started
        assert during.prompt_total == 10
        assert during.prompt_done == done_before
        assert not during.is_prompt_done and not is_done
    assert session.progress().prompt_done == session.prompt_total == 10
