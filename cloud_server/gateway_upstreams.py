"""The gateway's view of its prefill instances: which are healthy, and where to try first.

Placement never uses load reports: ``candidates`` is every healthy instance in round-robin order
from a moving start point, and the gateway learns "busy" only from an instance's immediate 429.
Health checks (``GET /health``) drop dead instances and re-add recovered ones; a connection
failure while forwarding drops an instance at once. ``--upstream-dns`` names are re-resolved on
every check, each address being one upstream (a Kubernetes headless Service).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0


@dataclass(eq=False)
class Upstream:
    url: str  # http://host:port, no trailing slash
    is_healthy: bool = True  # optimistic until the first check says otherwise
    is_from_dns: bool = False


def url_for(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{port}"


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--upstream-dns {value!r}: use HOST:PORT")
    return host, int(port)


class UpstreamPool:
    def __init__(self, urls: list[str]) -> None:
        self._upstreams = [Upstream(u.rstrip("/")) for u in urls]
        self._start = 0

    @property
    def upstreams(self) -> list[Upstream]:
        return list(self._upstreams)

    @property
    def num_healthy(self) -> int:
        return sum(u.is_healthy for u in self._upstreams)

    def candidates(self, max_tries: int) -> list[Upstream]:
        """Healthy instances to try in order, at most ``max_tries``; the start point rotates."""
        healthy = [u for u in self._upstreams if u.is_healthy]
        if not healthy:
            return []
        start = self._start % len(healthy)
        self._start += 1
        return (healthy[start:] + healthy[:start])[:max_tries]

    def mark_failed(self, upstream: Upstream) -> None:
        if upstream.is_healthy:
            log.warning("upstream %s failed: out of rotation until healthy", upstream.url)
        upstream.is_healthy = False

    def set_dns_members(self, urls: set[str]) -> None:
        """Make the DNS-found upstreams exactly ``urls`` (static ``--upstream`` ones stay)."""
        known = {u.url for u in self._upstreams}
        kept = [u for u in self._upstreams if not u.is_from_dns or u.url in urls]
        added = [Upstream(url, is_from_dns=True) for url in sorted(urls - known)]
        if added or len(kept) != len(self._upstreams):
            log.info("upstreams from DNS: %s", sorted(urls))
        self._upstreams = kept + added

    async def check_health(self, client: httpx.AsyncClient) -> None:
        async def check(upstream: Upstream) -> None:
            try:
                resp = await client.get(upstream.url + "/health", timeout=HEALTH_TIMEOUT_S)
                is_healthy = resp.status_code == 200
            except httpx.HTTPError:
                is_healthy = False
            if is_healthy != upstream.is_healthy:
                log.info("upstream %s is %s", upstream.url, "up" if is_healthy else "down")
            upstream.is_healthy = is_healthy

        await asyncio.gather(*(check(u) for u in self._upstreams))


async def resolve(host: str, port: int) -> set[str]:
    """Every address ``host`` resolves to, as upstream URLs (empty when it does not resolve)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        log.warning("cannot resolve %s: %s", host, err)
        return set()
    return {url_for(str(info[4][0]), port) for info in infos}
