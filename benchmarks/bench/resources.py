"""What a ``pdd bench`` run sets up before it measures: its requests, the device model and the
cloud (``--cloud``, or an embedded one). Shared by the benchmark and the cloud load mode."""

from __future__ import annotations

import contextlib
from dataclasses import replace

from rich.console import Console

from .options import BenchOptions


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
    args += ("--prefix-cache-mb", str(opts.cloud_prefix_cache_mb))
    with embedded_cloud(*args, threads=opts.cloud_threads) as proc:
        yield proc.url(opts.transport or "http")
