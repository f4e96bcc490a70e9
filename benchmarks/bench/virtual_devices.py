"""Cloud load mode (``--virtual-devices M``): M model-free devices drive the cloud.

Each virtual device runs closed-loop (its next request when the cloud part of the last is over)
and follows the device timing model instead of running a model: in pd it sends the handoff
at m = cloud tokens received when its emulated prompt prefill ends, Tpd((1-ρ)L) after the request
started (from ``--device-profile``, else ``--device-prefill-tok-s``, else ARCHITECTURE §8's
480 tok/s divided by ``--device-slowdown``). Cloud-only reads the whole answer from the cloud.

The phases run one after the other on the same requests. Per mode: request rate the cloud
sustained, goodput (requests/s within the SLOs, on the tokens the cloud streamed), cloud busy s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from benchmarks.planner.profiles import load_named
from common.errors import PDError
from common.messages import End, FirstToken, GenerateRequest, Token
from common.timing_model import kept_prompt_len
from device_client.config import ClientConfig
from device_client.types import DisplayedToken, GenerationResult, Mode

from .metrics import RequestRecord, parse_goodput, summarize
from .resources import cloud_url, load_device_model, load_requests
from .workloads import BenchRequest

DEFAULT_PREFILL_TOK_S = 480.0  # ARCHITECTURE §8, this CPU at 2 threads
_DEFAULT_CLOUD_TOKENS = 16


@dataclass(frozen=True)
class VirtualDeviceModel:
    """Tpd for the emulated device: a fitted profile or a constant rate."""

    prefill_tok_s: float | None = None
    profile: object | None = None  # common.profiles.DeviceProfile

    def prefill_s(self, prompt_len: int, refine_ratio: float) -> float:
        kept = kept_prompt_len(prompt_len, refine_ratio)
        if self.profile is not None:
            return self.profile.prefill.time(kept)
        return kept / self.prefill_tok_s


async def _handoff_later(stream, received: list, delay_s: float, out: dict) -> None:
    await asyncio.sleep(delay_s)
    out["handoff_index"] = len(received)
    with contextlib.suppress(Exception):
        await stream.handoff(len(received))


async def virtual_request(
    config: ClientConfig, req: BenchRequest, mode: str, cloud_tokens: int, prefill_s: float
) -> RequestRecord:
    """One request of one virtual device; times are cloud token arrivals."""
    t0 = time.monotonic()
    budget = req.output_len - 1 if mode == "cloud" else cloud_tokens
    request = GenerateRequest(
        prompt_ids=req.prompt_ids, max_tokens=req.output_len, cloud_tokens=budget
    )
    record = RequestRecord(req.index, mode, req.input_len, req.output_len, 0.0)
    try:
        stream = await open_cloud_stream(request, config)
    except PDError as err:
        record.error = f"{err.code}: {err.message}"
        return record
    tokens: list[DisplayedToken] = []
    handoff: dict = {}
    end: End | None = None
    fallback = None
    timer = None
    if mode == "pd":
        timer = asyncio.create_task(_handoff_later(stream, tokens, prefill_s, handoff))
    try:
        async for event in stream.events():
            if isinstance(event, FirstToken | Token) and "handoff_index" not in handoff:
                now = time.monotonic() - t0
                tokens.append(DisplayedToken(len(tokens), event.token_id, "", "cloud", now))
            elif isinstance(event, End):
                end = event
                break
    except PDError as err:
        fallback = f"{err.code}: {err.message}"
    finally:
        if timer is not None:
            timer.cancel()
        await stream.aclose()
    handoff_index = handoff.get("handoff_index") if mode == "pd" else None
    if handoff_index == 0:  # the device beat the cloud; no model runs, so its token id is unknown
        tokens = [DisplayedToken(0, -1, "", "device", prefill_s)]
    record.result = GenerationResult(
        mode=Mode.PD if mode == "pd" else Mode.CLOUD,
        tokens=tokens,
        prompt_tokens=req.input_len,
        kept_prompt_tokens=req.input_len,
        handoff_index=handoff_index,
        cloud_tokens=end.usage.completion_tokens if end else 0,
        cloud_busy_s=end.usage.busy_s if end else None,
        fallback=fallback,
        end_reason=end.reason.value if end else "",
    )
    return record


async def open_cloud_stream(request: GenerateRequest, config: ClientConfig):
    from device_client.transports import open_stream

    return await open_stream(request, config)


async def run_phase(
    config: ClientConfig,
    requests: list[BenchRequest],
    mode: str,
    num_devices: int,
    cloud_tokens: int,
    device: VirtualDeviceModel,
) -> tuple[list[RequestRecord], float]:
    """All ``requests`` in ``mode`` by ``num_devices`` closed-loop devices; (records, wall s)."""
    queue: asyncio.Queue[BenchRequest] = asyncio.Queue()
    for req in requests:
        queue.put_nowait(req)
    records: list[RequestRecord] = []
    t0 = time.monotonic()

    async def device_loop() -> None:
        while not queue.empty():
            req = queue.get_nowait()
            start = time.monotonic() - t0
            prefill_s = device.prefill_s(req.input_len, 0.0)
            record = await virtual_request(config, req, mode, cloud_tokens, prefill_s)
            record.start_s = start
            records.append(record)

    await asyncio.gather(*(device_loop() for _ in range(num_devices)))
    return records, time.monotonic() - t0


def _device_model(opts) -> VirtualDeviceModel:
    if opts.device_profile is not None:
        return VirtualDeviceModel(profile=load_named(opts.device_profile, "device"))
    rate = opts.device_prefill_tok_s or DEFAULT_PREFILL_TOK_S / opts.device_slowdown
    if rate <= 0:
        raise ValueError("--device-prefill-tok-s must be > 0")
    return VirtualDeviceModel(prefill_tok_s=rate)


def run_virtual_devices(opts, console) -> dict:
    """The cloud load mode of ``pdd bench``: cloud-only then pd, M devices each."""
    from .report import print_mode, save_result

    device = _device_model(opts)
    slos = parse_goodput(opts.goodput)
    lm = load_device_model(opts)  # the tokenizer builds the prompts; no forward runs
    requests = load_requests(opts, lm)
    cloud_tokens = _DEFAULT_CLOUD_TOKENS if opts.cloud_tokens is None else opts.cloud_tokens
    result: dict = {"config": opts.to_json(), "virtual_devices": opts.virtual_devices, "modes": {}}
    with cloud_url(opts, console, True, 4) as url:
        config = ClientConfig(cloud_url=url, transport=opts.transport, network=opts.network)
        for mode in ("cloud", "pd"):
            console.print(f"[dim]{opts.virtual_devices} virtual devices, mode {mode}...[/dim]")
            records, wall_s = asyncio.run(
                run_phase(config, requests, mode, opts.virtual_devices, cloud_tokens, device)
            )
            summary = summarize(records, slos)
            summary["wall_s"] = wall_s
            summary["sustained_request_rate"] = len([r for r in records if r.is_ok]) / wall_s
            result["modes"][mode] = summary
            print_mode(console, f"{mode} ({opts.virtual_devices} virtual devices)", summary)
    cloud, pd = result["modes"]["cloud"], result["modes"]["pd"]
    result["rate_gain"] = pd["sustained_request_rate"] / cloud["sustained_request_rate"]
    console.print(f"Sustained request rate: cloud-only {cloud['sustained_request_rate']:.2f}/s, "
                  f"pd {pd['sustained_request_rate']:.2f}/s ({result['rate_gain']:.2f}x)")  # fmt: skip
    if opts.save_result:
        save_result(result, opts.save_result)
    return result
