"""``pdd gateway``: P/D-Serve's on-demand forwarding over several prefill instances (HTTP).

A request goes to one instance; an instance with no free slot answers 429 at once, and the
gateway forwards the request to the next candidate, at most ``max_forwards`` times, before it
answers 429 itself. Responses stream through unchanged (pd SSE and the OpenAI API). A pd
request's instance is remembered by (caller, ``request_id``), so its handoff reaches the instance
holding it and never another caller's request with the same id; the caller is its Authorization
header, or with none the request's secret (the instance hands it out, the device sends it back).
A pd body is parsed here with the instances' own model, so a malformed one gets the same 400.
gRPC does not pass through the gateway: gRPC clients use the instances directly (see docs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from common.errors import CloudUnavailable, Overloaded, UnknownRequest
from common.messages import GenerateRequest
from common.wire import REQUEST_SECRET_HEADER, parse_body

from .config import GatewayConfig
from .gateway_upstreams import Upstream, UpstreamPool, resolve, split_host_port
from .http_errors import add_error_handlers
from .openapi_doc import describe_routes
from .security import SecurityMiddleware

FORWARDED_HEADERS = ("authorization", "content-type", "accept", REQUEST_SECRET_HEADER)
RELAYED_HEADERS = ("content-type", "retry-after", "cache-control", REQUEST_SECRET_HEADER)
FAILURE_STATUSES = (502, 503, 504)  # the instance is going away: try the next one


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("pdd_gateway_requests", "requests received", ["route"], registry=r)
        self.forwards = Counter(
            "pdd_gateway_forwards",
            "tries on a next instance after a rejection or failure",
            registry=r,
        )
        self.upstream_rejections = Counter(
            "pdd_gateway_upstream_rejections", "429s from instances (no free slot)", registry=r
        )
        self.rejected = Counter(
            "pdd_gateway_rejected_requests",
            "429s to clients: every instance tried was busy",
            registry=r,
        )
        self.upstream_failures = Counter(
            "pdd_gateway_upstream_failures", "instance failures, by kind", ["kind"], registry=r
        )
        self.healthy = Gauge("pdd_gateway_healthy_upstreams", "healthy instances", registry=r)
        self.upstreams = Gauge("pdd_gateway_upstreams", "known instances", registry=r)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.pool = UpstreamPool(list(config.upstreams))
        self.metrics = GatewayMetrics()
        self.routes: OrderedDict[tuple[str, str], Upstream] = OrderedDict()
        self.client: httpx.AsyncClient | None = None

    async def run_checks(self) -> None:
        """Forever: re-resolve DNS, check every instance's health, update the gauges."""
        assert self.client is not None
        while True:
            if self.config.upstream_dns:
                self.pool.set_dns_members(await resolve(*split_host_port(self.config.upstream_dns)))
            await self.pool.check_health(self.client)
            self._update_gauges()
            await asyncio.sleep(self.config.health_interval_s)

    def _update_gauges(self) -> None:
        self.metrics.healthy.set(self.pool.num_healthy)
        self.metrics.upstreams.set(len(self.pool.upstreams))

    async def forward(self, method: str, path: str, request: Request, body: bytes):
        """Send to instances in turn until one accepts; returns it and its streaming response."""
        assert self.client is not None
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k))}
        tries = self.pool.candidates(1 + self.config.max_forwards)
        if not tries:
            raise CloudUnavailable("no healthy prefill instance; finish the answer on the device")
        for i, upstream in enumerate(tries):
            if i:
                self.metrics.forwards.inc()
            resp = await self._try(upstream, method, path, headers, body)
            if resp is not None:
                return upstream, resp
        self.metrics.rejected.inc()
        raise Overloaded(
            f"all {len(tries)} prefill instances tried are busy; retry later or run on the device"
        )

    async def _try(self, upstream: Upstream, method, path, headers, body) -> httpx.Response | None:
        """The instance's response, or None when it rejected (429) or failed."""
        assert self.client is not None
        request = self.client.build_request(
            method, upstream.url + path, headers=headers, content=body
        )
        try:
            resp = await self.client.send(request, stream=True)
        except httpx.TransportError:
            self._fail(upstream, "connect")
            return None
        if resp.status_code == 429:
            self.metrics.upstream_rejections.inc()
        elif resp.status_code in FAILURE_STATUSES:
            self._fail(upstream, "status")
        else:
            return resp
        await resp.aclose()
        return None

    def _fail(self, upstream: Upstream, kind: str) -> None:
        self.metrics.upstream_failures.labels(kind=kind).inc()
        self.pool.mark_failed(upstream)
        self._update_gauges()

    def relay(self, upstream: Upstream, resp: httpx.Response) -> StreamingResponse:
        """Stream the instance's response through; a broken upstream stream breaks the client's."""

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            except httpx.HTTPError:
                self._fail(upstream, "stream")
                raise
            finally:
                await resp.aclose()

        headers = {k: v for k in RELAYED_HEADERS if (v := resp.headers.get(k))}
        headers["x-pdd-upstream"] = upstream.url
        return StreamingResponse(body(), status_code=resp.status_code, headers=headers)

    def remember(self, key: tuple[str, str], upstream: Upstream) -> None:
        self.routes[key] = upstream
        while len(self.routes) > self.config.num_remembered_ids:
            self.routes.popitem(last=False)


def caller_of(authorization: str | None, secret: str | None) -> str:
    """Who a request comes from: its Authorization header (hashed), else its secret."""
    if authorization:
        return "key:" + hashlib.sha256(authorization.encode()).hexdigest()
    return "secret:" + (secret or "")


def create_gateway_app(config: GatewayConfig) -> FastAPI:
    gw = Gateway(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        timeout = httpx.Timeout(None, connect=config.connect_timeout_s)
        gw.client = httpx.AsyncClient(timeout=timeout, limits=limits)
        checks = asyncio.create_task(gw.run_checks())
        yield
        checks.cancel()
        await gw.client.aclose()

    app = FastAPI(title="pd-device gateway", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.gateway = gw
    app.add_middleware(SecurityMiddleware, config=config.security)
    add_error_handlers(app)
    add_gateway_routes(app, gw)
    describe_routes(app)
    return app


def add_gateway_routes(app: FastAPI, gw: Gateway) -> None:
    def proxied(method: str, path: str) -> None:
        async def route(request: Request) -> Response:
            gw.metrics.requests.labels(route=path).inc()
            body = await request.body()
            upstream, resp = await gw.forward(method, request.url.path, request, body)
            return gw.relay(upstream, resp)

        app.add_api_route(path, route, methods=[method])

    for path in ("/v1/completions", "/v1/chat/completions"):
        proxied("POST", path)
    for path in ("/v1/models", "/v1/pd/settings"):
        proxied("GET", path)

    @app.post("/v1/pd/generate")
    async def generate(request: Request) -> Response:
        gw.metrics.requests.labels(route="/v1/pd/generate").inc()
        pd_request = parse_body(GenerateRequest, await request.body())  # a fresh id if none
        body = pd_request.model_dump_json(exclude_none=True).encode()
        upstream, resp = await gw.forward("POST", "/v1/pd/generate", request, body)
        if resp.status_code == 200:
            caller = caller_of(
                request.headers.get("authorization"), resp.headers.get(REQUEST_SECRET_HEADER)
            )
            gw.remember((caller, pd_request.request_id), upstream)
        return gw.relay(upstream, resp)

    @app.post("/v1/pd/requests/{request_id}/handoff")
    async def handoff(request_id: str, request: Request) -> Response:
        caller = caller_of(
            request.headers.get("authorization"), request.headers.get(REQUEST_SECRET_HEADER)
        )
        upstream = gw.routes.get((caller, request_id))
        if upstream is None:
            raise UnknownRequest(
                f"no request with id {request_id!r} is running on this server; "
                "send the handoff to the server that streams the request"
            )
        assert gw.client is not None
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k))}
        try:
            resp = await gw.client.post(
                f"{upstream.url}/v1/pd/requests/{request_id}/handoff",
                headers=headers,
                content=await request.body(),
            )
        except httpx.TransportError:
            raise UnknownRequest(f"the instance holding {request_id!r} is gone") from None
        return Response(resp.content, resp.status_code, media_type="application/json")

    @app.get("/health")
    async def health() -> dict:
        ups = [{"url": u.url, "is_healthy": u.is_healthy} for u in gw.pool.upstreams]
        return {"status": "ok", "healthy_upstreams": gw.pool.num_healthy, "upstreams": ups}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)
