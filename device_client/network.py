"""Network emulation on the device-cloud link (benchmarks): RTT, jitter and bandwidth.

Applied in the client transport, so the cloud and the device code are untouched: the request and
the handoff wait one uplink delay before they are sent; each cloud event is delivered one downlink
delay after the cloud sent it, in order (a later event never overtakes an earlier one).
One-way delay = RTT/2 + uniform(-jitter/2, +jitter/2) + size / bandwidth.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

from common.wire import Event

from .config import NetworkEmulation


def _one_way_s(net: NetworkEmulation, nbytes: int, rng: random.Random) -> float:
    delay = net.rtt_ms / 2000.0 + rng.uniform(-0.5, 0.5) * net.jitter_ms / 1000.0
    if net.bandwidth_mbps > 0:
        delay += nbytes * 8 / (net.bandwidth_mbps * 1e6)
    return max(0.0, delay)


def uplink_delay_s(net: NetworkEmulation, nbytes: int) -> float:
    return _one_way_s(net, nbytes, random.Random(net.seed))


class EmulatedLinkStream:
    """Wraps a ``CloudStream``; delays what crosses the link as ``net`` says."""

    def __init__(self, inner, net: NetworkEmulation) -> None:
        self._inner = inner
        self._net = net
        self._rng = random.Random(net.seed + 1)

    async def events(self) -> AsyncIterator[Event]:
        last_arrival = 0.0
        async for event in self._inner.events():
            delay = _one_way_s(self._net, len(event.model_dump_json()), self._rng)
            arrival = max(last_arrival, time.monotonic() + delay)
            last_arrival = arrival
            await asyncio.sleep(max(0.0, arrival - time.monotonic()))
            yield event

    async def handoff(self, at_index: int) -> None:
        await asyncio.sleep(_one_way_s(self._net, 64, self._rng))
        await self._inner.handoff(at_index)

    async def aclose(self) -> None:
        await self._inner.aclose()
