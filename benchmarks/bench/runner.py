"""Run the benchmark's requests in every mode, interleaved request by request.

Jobs are (request, mode) pairs in the order request 0 in every mode, request 1 in every mode, ...
so machine noise hits the modes alike. A job starts at its request's arrival offset, and at most
``max_concurrency`` run at once (FIFO: with 1, strictly one after another).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.errors import PDError
from common.messages import End, FirstToken, GenerateRequest, SamplingParams
from device_client.config import ClientConfig, NetworkEmulation
from device_client.transports import open_stream

from .metrics import RequestRecord, record_from_result
from .workloads import BenchRequest

ALL_MODES = ("device", "cloud", "pd", "pd+refine")


@dataclass(frozen=True)
class ModeSpec:
    label: str  # device | cloud | pd | pd+refine
    mode: str  # the client's mode
    refine_ratio: float | None

    @property
    def uses_cloud(self) -> bool:
        return self.mode != "device"


def parse_modes(spec: str, refine_ratio: float) -> list[ModeSpec]:
    """``"device,cloud,pd"`` to specs; pd+refine is added when ``refine_ratio`` > 0."""
    labels = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in labels if m not in ALL_MODES]
    if unknown or not labels:
        raise ValueError(f"unknown mode {unknown or spec!r}: choose from {', '.join(ALL_MODES)}")
    if refine_ratio > 0 and "pd+refine" not in labels:
        labels.append("pd+refine")
    if "pd+refine" in labels and refine_ratio <= 0:
        raise ValueError("mode pd+refine needs --refine-ratio > 0")
    specs = {
        "device": ModeSpec("device", "device", None),
        "cloud": ModeSpec("cloud", "cloud", None),
        "pd": ModeSpec("pd", "pd", 0.0),
        "pd+refine": ModeSpec("pd+refine", "pd", refine_ratio),
    }
    return [specs[m] for m in ALL_MODES if m in labels]


@dataclass(frozen=True)
class RunConfig:
    modes: tuple[ModeSpec, ...]
    max_concurrency: int = 1
    cloud_tokens: int | None = None  # None: from the settings bucket
    sampling: SamplingParams = SamplingParams()


async def run_requests(
    client,
    requests: list[BenchRequest],
    config: RunConfig,
    on_done: Callable[[RequestRecord], None] = lambda r: None,
) -> list[RequestRecord]:
    """Every request in every mode; records in job order, answers compared with device-only."""
    semaphore = asyncio.Semaphore(config.max_concurrency)
    t0 = time.monotonic()

    async def job(req: BenchRequest, spec: ModeSpec) -> RequestRecord:
        await asyncio.sleep(max(0.0, t0 + req.arrival_s - time.monotonic()))
        async with semaphore:
            record = await _run_one(client, req, spec, config, time.monotonic() - t0)
        on_done(record)
        return record

    jobs = [job(req, spec) for req in requests for spec in config.modes]
    records = list(await asyncio.gather(*jobs))
    mark_matches(records)
    return records


async def _run_one(
    client, req: BenchRequest, spec: ModeSpec, config: RunConfig, start_s: float
) -> RequestRecord:
    try:
        result = await client.agenerate(
            prompt_ids=req.prompt_ids,
            max_tokens=req.output_len,
            mode=spec.mode,
            cloud_tokens=config.cloud_tokens if spec.mode == "pd" else None,
            refine_ratio=spec.refine_ratio,
            sampling=config.sampling,
        )
    except PDError as err:
        error = f"{err.code}: {err.message}"
        return RequestRecord(
            req.index, spec.label, req.input_len, req.output_len, start_s, error=error
        )
    record = record_from_result(req.index, spec.label, req.output_len, start_s, result)
    if result.mode.value != spec.mode:
        record.extra["ran_as"] = result.mode.value  # the settings sent it to the device alone
    return record


def mark_matches(records: list[RequestRecord]) -> None:
    """Set ``matches_device``: same token ids as the device-only answer to the same request."""
    device = {r.index: r.token_ids for r in records if r.mode == "device" and r.is_ok}
    for r in records:
        if r.index in device:
            r.matches_device = r.is_ok and r.token_ids == device[r.index]


async def measure_cloud_prefill(
    config: ClientConfig, requests: list[BenchRequest], num_repeats: int = 2
) -> dict[int, float]:
    """The cloud's own prefill time per input length, one request at a time on an idle cloud
    (``prefill_s`` of its first-token event, no network emulation): the floor of pd's TTFT."""
    bare = ClientConfig(
        cloud_url=config.cloud_url,
        transport=config.transport,
        model=config.model,
        network=NetworkEmulation(),
        connect_timeout_s=config.connect_timeout_s,
    )
    by_len: dict[int, float] = {}
    for req in requests:
        if req.input_len not in by_len:  # the faster of two: the machine may be shared
            times = [await _prefill_once(req.prompt_ids, bare) for _ in range(num_repeats)]
            by_len[req.input_len] = min(times)
    return by_len


async def _prefill_once(prompt_ids: list[int], config: ClientConfig) -> float:
    request = GenerateRequest(prompt_ids=prompt_ids, max_tokens=1, cloud_tokens=0)
    stream = await open_stream(request, config)
    prefill_s = float("nan")
    try:
        async for event in stream.events():
            if isinstance(event, FirstToken):
                prefill_s = event.prefill_s
            if isinstance(event, End):
                break
    finally:
        await stream.aclose()
    return prefill_s
