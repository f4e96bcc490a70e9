"""``pdd bench``: device-only, cloud-only, pd (and pd+refine) side by side on the same requests.

Stages: workloads (prompts, arrivals) -> runner (every mode, interleaved) -> metrics -> report
(console, JSON) -> plots. ``--virtual-devices M`` runs the cloud load mode instead
(``virtual_devices.py``).
"""

from __future__ import annotations

import asyncio
import os
import platform as host
import statistics
import sys
from dataclasses import asdict
from typing import NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.cli_options import command_from
from common.errors import PDError
from common.messages import SamplingParams
from common.settings import SplitSettings

from .options import BenchOptions
from .resources import cloud_url, load_device_model, load_requests


def _fail(console: Console, message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    sys.exit(2)


@command_from(BenchOptions, on_error=lambda message: _fail(Console(), message))
def bench_command(raw: BenchOptions) -> None:
    """Benchmark TTFT/TPOT and cloud cost of pd against device-only and cloud-only."""
    console = Console()
    try:
        opts = raw.resolved()
        console.print(f"[bold]{opts.emulation.describe()}[/bold]", highlight=False, soft_wrap=True)
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
