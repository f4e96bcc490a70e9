"""``pdd bench``: device-only, cloud-only, pd (and pd+refine) side by side on the same requests.

Stages: workloads (prompts, arrivals) -> runner (every mode, interleaved) -> metrics -> report
(console, JSON) -> plots. ``--virtual-devices M`` runs the cloud load mode instead
(``virtual_devices.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform as host
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.cli_options import command_from, knob
from common.defaults import DEFAULT_MODEL
from common.errors import PDError
from common.messages import SamplingParams
from common.settings import SplitSettings, default_settings
from device_client.config import (
    DEFAULT_EMULATION,
    EMULATIONS,
    DeviceEmulation,
    NetworkEmulation,
    device_emulation,
)

QUICK = {"input_lens": [64, 256], "output_len": 32, "num_prompts": 1}
FULL = {"input_lens": [128, 512, 1024, 2048], "output_len": 128, "num_prompts": 4}


def _int_list(text: str, what: str = "--input-lens") -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{what} must be integers >= 1, got {text!r}")
    return values


@dataclass(frozen=True)
class BenchOptions:
    """Everything one ``pdd bench`` run needs: each field is its command-line option too
    (``common.cli_options``), validated, and saved with the result."""

    modes: str = knob("device,cloud,pd", "comma list of device, cloud, pd, pd+refine")
    cloud: str | None = knob(None, "a running cloud (http://... or grpc://...); default: embedded")
    cloud_threads: int = knob(1, "torch threads of the embedded cloud")
    transport: str | None = knob(None, "http | grpc (default: from the URL scheme)")
    model: str = knob(DEFAULT_MODEL, "model alias or transformers folder")
    input_lens: list[int] | None = knob(
        None, "synthetic prompt lengths, e.g. 128,512,1024,2048", cli_type=str, parse=_int_list
    )
    output_len: int | None = knob(None, "answer length (max_tokens)")
    num_prompts: int | None = knob(None, "synthetic requests per input length")
    trace: Path | None = knob(None, "Mooncake JSONL trace to replay instead")
    request_rate: float = knob(math.inf, "requests/s (Poisson); inf: all at once")
    burstiness: float = knob(1.0, "gamma shape of the gaps (1 = Poisson)")
    max_concurrency: int = knob(1, "requests in flight at once, all modes together")
    emulate: str = knob(
        DEFAULT_EMULATION, f"device emulation: {' | '.join(EMULATIONS)} (printed first, saved)"
    )
    device_slowdown: float | None = knob(
        None, "emulate a device K times slower instead (1 = this machine's real speed)"
    )
    device_threads: int = knob(1, "torch threads of the device")
    rtt_ms: float = knob(0.0, "emulated device-cloud round trip")
    jitter_ms: float = knob(0.0, "one-way delay varies by +-jitter/2")
    bandwidth_mbps: float = knob(0.0, "link bandwidth, 0 = unlimited")
    cloud_tokens: int | None = knob(None, "N for pd (default: from the settings)")
    settings_path: Path | None = knob(
        None, "split settings JSON (the `pdd tune` schema)", flag="--settings"
    )
    min_interval_ms: float | None = knob(None, "override the settings' Δmin (and τ̂d)")
    max_interval_ms: float | None = knob(None, "override the settings' Δmax (pacing)")
    refine_ratio: float = knob(0.0, "> 0 adds the pd+refine mode with this ρ")
    temperature: float = knob(0.0, "0 = greedy (the default)")
    seed: int = knob(0, "prompts, arrivals, jitter and sampling seed")
    goodput: list[str] | None = knob(None, "SLOs, e.g. --goodput ttft:2000 --goodput tpot:300")
    save_result: Path | None = knob(None, "write the result JSON here")
    plots: Path | None = knob(None, "write PNG plots into this folder")
    quick: bool = knob(False, "small preset: 64/256-token prompts, 32-token answers")
    virtual_devices: int = knob(0, "cloud load mode: M model-free virtual devices")
    device_prefill_tok_s: float | None = knob(None, "virtual devices' prefill rate")
    device_profile: Path | None = knob(None, "device profile JSON (`pdd profile device`)")

    def __post_init__(self) -> None:
        checks = [
            (self.output_len is None or self.output_len >= 1, "--output-len must be >= 1"),
            (self.num_prompts is None or self.num_prompts >= 1, "--num-prompts must be >= 1"),
            (self.max_concurrency >= 1, "--max-concurrency must be >= 1"),
            (self.request_rate > 0 and self.burstiness > 0, "--request-rate, --burstiness must be > 0"),
            (self.virtual_devices >= 0, "--virtual-devices must be >= 0"),
            (self.cloud_tokens is None or self.cloud_tokens >= 0, "--cloud-tokens must be >= 0"),
            (self.transport in (None, "http", "grpc"), "--transport must be http or grpc"),
            (self.max_interval_ms is None or self.max_interval_ms > 0, "--max-interval-ms must be > 0"),
            (self.min_interval_ms is None or self.min_interval_ms >= 0, "--min-interval-ms must be >= 0"),
        ]  # fmt: skip
        for is_ok, message in checks:
            if not is_ok:
                raise ValueError(message)
        self.emulation  # noqa: B018 (validates --emulate / --device-slowdown)

    @property
    def emulation(self) -> DeviceEmulation:
        return device_emulation(self.emulate, self.device_slowdown)

    @property
    def network(self) -> NetworkEmulation:
        return NetworkEmulation(self.rtt_ms, self.jitter_ms, self.bandwidth_mbps, self.seed)

    def resolved(self) -> BenchOptions:
        """The preset (``--quick`` or the full one) filled in where an option was not given."""
        preset = QUICK if self.quick else FULL
        return replace(
            self,
            input_lens=self.input_lens or preset["input_lens"],
            output_len=self.output_len or preset["output_len"],
            num_prompts=self.num_prompts or preset["num_prompts"],
            emulate=self.emulation.name,
            device_slowdown=self.emulation.slowdown,
            goodput=list(self.goodput or []),
        )

    def settings(self) -> SplitSettings:
        """The settings file (or defaults) with the pacing overrides applied to every bucket."""
        settings = (
            SplitSettings.load(self.settings_path) if self.settings_path else default_settings()
        )
        buckets = []
        for b in settings.buckets:
            hi = b.max_interval_s if self.max_interval_ms is None else self.max_interval_ms / 1000
            lo = b.min_interval_s if self.min_interval_ms is None else self.min_interval_ms / 1000
            buckets.append(
                b.model_copy(update={"max_interval_s": hi, "min_interval_s": min(lo, hi)})
            )
        return settings.model_copy(update={"buckets": buckets})

    def to_json(self) -> dict:
        out = asdict(self)
        out["device_emulation"] = self.emulation.to_json()
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def _fail(console: Console, message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    sys.exit(2)


@command_from(BenchOptions, on_error=lambda message: _fail(Console(), message))
def bench_command(raw: BenchOptions) -> None:
    """Benchmark TTFT/TPOT and cloud cost of pd against device-only and cloud-only."""
    console = Console()
    try:
        opts = raw.resolved()
        console.print(f"[bold]{opts.emulation.describe()}[/bold]", highlight=False)
        _validate(opts)
        if opts.virtual_devices:
            from .virtual_devices import run_virtual_devices

            run_virtual_devices(opts, console)
        else:
            run_bench(opts, console)
    except (PDError, ValueError, OSError, RuntimeError) as err:
        _fail(console, str(getattr(err, "message", err)))


def _validate(opts: BenchOptions) -> None:
    from .metrics import parse_goodput
    from .runner import parse_modes

    parse_modes(opts.modes, opts.refine_ratio)
    parse_goodput(opts.goodput)
    opts.settings()


def load_requests(opts: BenchOptions, lm) -> list:
    from .workloads import (
        arrival_offsets,
        check_context,
        load_trace,
        synthetic_requests,
        trace_requests,
    )

    if opts.trace is not None:
        requests = trace_requests(lm, load_trace(opts.trace), opts.seed)
    else:
        requests = synthetic_requests(
            lm, opts.input_lens, opts.output_len, opts.num_prompts, opts.seed
        )
        offsets = arrival_offsets(len(requests), opts.request_rate, opts.burstiness, opts.seed)
        requests = [replace(r, arrival_s=t) for r, t in zip(requests, offsets, strict=True)]
    check_context(requests, lm.max_context)
    return requests


def load_device_model(opts: BenchOptions):
    from common.model import load_model
    from common.platform import select_platform, set_threads

    set_threads(opts.device_threads)
    return load_model(opts.model, select_platform("cpu"))


@contextlib.contextmanager
def cloud_url(opts: BenchOptions, console: Console, needs_cloud: bool, max_concurrent: int):
    """The URL of ``--cloud``, or of an embedded cloud started for this run (None if unused)."""
    if not needs_cloud or opts.cloud is not None:
        yield opts.cloud
        return
    from device_client.embedded import embedded_cloud

    console.print(f"[dim]starting an embedded cloud ({opts.cloud_threads} threads)...[/dim]")
    args = ("--model", opts.model, "--max-concurrent", str(max(4, max_concurrent)))
    with embedded_cloud(*args, threads=opts.cloud_threads) as proc:
        yield proc.url(opts.transport or "http")


def base_profiles(opts: BenchOptions, url: str | None, settings: SplitSettings) -> dict:
    import torch

    return {
        "device": {
            "emulation": opts.emulation.name,
            "slowdown": opts.emulation.slowdown,
            "model": opts.model,
            "threads": opts.device_threads,
        },
        "cloud": {
            "url": url,
            "embedded": opts.cloud is None and url is not None,
            "threads": opts.cloud_threads if opts.cloud is None else "unknown (external)",
            "transport": opts.transport or ("grpc" if (url or "").startswith("grpc") else "http"),
        },
        "network": {**asdict(opts.network), "applied_in": "device client transport"},
        "split": {"cloud_tokens": opts.cloud_tokens, "settings": settings.model_dump()},
        "host": {
            "machine": host.platform(),
            "cpu_count": os.cpu_count(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": host.python_version(),
            "torch": torch.__version__,
        },
    }


def measured_device(records) -> dict:
    """The device as this run saw it (device-only requests): prefill tok/s and τd."""
    rows = [r for r in records if r.mode == "device" and r.is_ok]
    if not rows:
        return {}
    tpots = [r.tpot_s for r in rows if r.tpot_s is not None]
    return {
        "measured_prefill_tok_s": round(statistics.median(r.input_len / r.ttft_s for r in rows), 1),
        "measured_median_tpot_ms": round(1000 * statistics.median(tpots), 1) if tpots else None,
    }


async def _run_all(client, requests, run_config, progress: Progress):
    from .runner import measure_cloud_prefill, run_requests

    prefill_alone = {}
    if any(spec.uses_cloud for spec in run_config.modes):
        task = progress.add_task("cloud prefill alone", total=len({r.input_len for r in requests}))
        prefill_alone = await measure_cloud_prefill(client.config, requests)
        progress.update(task, completed=len(prefill_alone))
    task = progress.add_task("requests", total=len(requests) * len(run_config.modes))
    records = await run_requests(client, requests, run_config, lambda r: progress.advance(task))
    return records, prefill_alone


def run_bench(opts: BenchOptions, console: Console) -> dict:
    from device_client.client import DeviceClient

    from .metrics import parse_goodput
    from .plots import write_plots
    from .report import build_result, print_profiles, print_result, save_result
    from .runner import RunConfig, parse_modes

    specs = parse_modes(opts.modes, opts.refine_ratio)
    settings = opts.settings()
    console.print("[dim]loading the device model...[/dim]")
    lm = load_device_model(opts)
    requests = load_requests(opts, lm)
    sampling = SamplingParams(temperature=opts.temperature, seed=opts.seed)
    run_config = RunConfig(tuple(specs), opts.max_concurrency, opts.cloud_tokens, sampling)
    needs_cloud = any(s.uses_cloud for s in specs)
    with cloud_url(opts, console, needs_cloud, opts.max_concurrency) as url:
        client = DeviceClient(
            url, model=lm, transport=opts.transport, threads=opts.device_threads,
            device_slowdown=opts.device_slowdown, settings=settings, network=opts.network,
        )  # fmt: skip
        profiles = base_profiles(opts, url, settings)
        print_profiles(console, profiles)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            records, prefill_alone = asyncio.run(_run_all(client, requests, run_config, progress))
    profiles["device"].update(measured_device(records))
    profiles["cloud"]["prefill_alone_ms"] = {
        k: round(1000 * v, 1) for k, v in prefill_alone.items()
    }
    result = build_result(
        records, parse_goodput(opts.goodput), prefill_alone, profiles, opts.to_json()
    )
    print_result(console, result)
    if opts.save_result:
        save_result(result, opts.save_result)
        console.print(f"saved {opts.save_result}")
    if opts.plots:
        for path in write_plots(records, opts.plots):
            console.print(f"wrote {path}")
    return result
