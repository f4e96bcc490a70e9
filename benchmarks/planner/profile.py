"""``pdd profile device|cloud``: measure the real model, fit the cost model, save a profile JSON.

Prefill time vs prompt length (repeated: median and spread), decode time per token vs context
length, and for the cloud the decode round time vs concurrent requests, timed through the
engine's own step (batched forward over the padded KV, sampling, emitting the tokens), so the
profile predicts what ``pdd serve`` does, not a bare forward. A device slowdown K multiplies every measured time (a device K times slower than
this machine). The fitted parameters and their error go into the file next to the raw medians.
"""

from __future__ import annotations

import os
import platform as host
import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from enum import Enum
from typing import NoReturn

import typer

from benchmarks.planner.options import ProfileOptions
from common.cli_options import command_from, config_json
from common.profiles import (
    CloudProfile,
    DeviceProfile,
    fit_batch,
    fit_decode,
    fit_prefill,
    save_profile,
)

FULL_CONCURRENCY = [1, 2, 4, 8]
QUICK_CONCURRENCY = [1, 4]


class Target(str, Enum):
    device = "device"
    cloud = "cloud"


def _random_ids(num_tokens: int, vocab_size: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(256, vocab_size) for _ in range(num_tokens)]


def _timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def _summary(key: str, value: int, samples: list[float]) -> dict:
    return {
        key: value,
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": samples,
    }


def measure_prefill(loaded, lengths: list[int], repeats: int, slowdown: float) -> list[dict]:
    """One forward over L fresh tokens into an empty cache, ``repeats`` times per length."""
    from common.forward import forward_tokens, new_cache

    model, vocab = loaded.model, loaded.model.config.vocab_size
    sync = loaded.platform.synchronize
    forward_tokens(model, [1, 2, 3], [0, 1, 2], new_cache(model))  # warm-up
    rows = []
    for length in lengths:
        ids, positions = _random_ids(length, vocab, seed=length), list(range(length))

        def run(ids: list[int] = ids, positions: list[int] = positions) -> None:
            forward_tokens(model, ids, positions, new_cache(model))

        samples = [slowdown * _timed(run, sync) for _ in range(repeats)]
        rows.append(_summary("length", length, samples))
    return rows


def measure_decode(loaded, contexts: list[int], num_steps: int, slowdown: float) -> list[dict]:
    """Per-token decode time after a context of ``ctx`` tokens (batch 1)."""
    from common.forward import forward_tokens, new_cache

    model, vocab = loaded.model, loaded.model.config.vocab_size
    sync = loaded.platform.synchronize
    rows = []
    for ctx in contexts:
        cache = new_cache(model)
        forward_tokens(model, _random_ids(ctx, vocab, seed=ctx), list(range(ctx)), cache)
        samples = []
        for step in range(num_steps):
            pos = ctx + step
            samples.append(
                slowdown * _timed(lambda: forward_tokens(model, [1000 + step], [pos], cache), sync)  # noqa: B023
            )
        rows.append(_summary("context", ctx, samples))
    return rows


def measure_batch_decode(
    loaded, levels: list[int], context: int, num_steps: int, slowdown: float
) -> list[dict]:
    """Decode round time for B concurrent requests, timed through the engine's own step
    (``cloud_server.engine.Engine.step``: schedule, the batched forward over its padded KV,
    sampling, and emitting each token), as ``pdd serve`` runs it: B requests of ``context``
    prompt tokens, the rounds where all B decode."""
    return [_engine_row(loaded, b, context, num_steps, slowdown) for b in levels]


def _engine_row(loaded, batch: int, context: int, num_steps: int, slowdown: float) -> dict:
    import asyncio

    from cloud_server.config import EngineConfig
    from cloud_server.engine import Engine
    from common.messages import GenerateRequest

    # Whole prompts first (no chunks), no prefix cache: every round runs all B requests.
    config = EngineConfig(
        max_concurrent_requests=batch, prefill_chunk_tokens=0, prefix_cache_bytes=0
    )
    engine = Engine(loaded, config)
    vocab, decode, width = loaded.model.config.vocab_size, engine.runner.decode, []

    def counted(seqs):  # what kind of step ran: a decode round over len(seqs) requests
        width.append(len(seqs))
        return decode(seqs)

    engine.runner.decode = counted

    async def run() -> list[float]:
        for b in range(batch):
            ids = _random_ids(context, vocab, seed=context + b)
            request = GenerateRequest(
                prompt_ids=ids, max_tokens=num_steps + 1, cloud_tokens=num_steps
            )
            engine.submit(request)
        samples = []
        while engine.num_active:
            width.clear()
            seconds = _timed(engine.step, loaded.platform.synchronize)
            if width == [batch]:
                samples.append(slowdown * seconds)
        return samples

    return _summary("concurrency", batch, asyncio.run(run()))


def _meta(
    loaded, target: str, threads: int, slowdown: float, name: str | None, lengths: list[int]
) -> dict:
    import torch
    import transformers

    return {
        "name": name or f"{target}-x{slowdown:g}",
        "source": "measured",
        "target": target,
        "measured_max_prompt_len": max(lengths),
        "machine": f"{host.node()} {host.machine()} {host.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "model": loaded.name,
        "model_fingerprint": loaded.fingerprint,
        "platform": loaded.platform.name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": threads,
        "slowdown": slowdown,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _medians(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    return [float(r[key]) for r in rows], [r["median_s"] for r in rows]


def build_profile(
    loaded,
    target: Target,
    lengths: list[int],
    repeats: int,
    slowdown: float,
    threads: int,
    name: str | None = None,
    levels: list[int] | None = None,
) -> DeviceProfile | CloudProfile:
    """Measure and fit; the quick path uses fewer points, never a different method."""
    prefill_rows = measure_prefill(loaded, lengths, repeats, slowdown)
    contexts = sorted({lengths[0], lengths[len(lengths) // 2], lengths[-1]})
    decode_rows = measure_decode(loaded, contexts, num_steps=max(3, repeats + 1), slowdown=slowdown)
    measurements = {"prefill": prefill_rows, "decode": decode_rows}
    prefill = fit_prefill(*_medians(prefill_rows, "length"))
    decode = fit_decode(*_medians(decode_rows, "context"))
    meta = _meta(loaded, target.value, threads, slowdown, name, lengths)
    if target is Target.device:
        return DeviceProfile(prefill=prefill, decode=decode, meta=meta, measurements=measurements)
    batch_rows = measure_batch_decode(
        loaded, levels or FULL_CONCURRENCY, lengths[len(lengths) // 2], 8, slowdown
    )
    measurements["batch_decode"] = batch_rows
    batch = fit_batch(*_medians(batch_rows, "concurrency"), split_lone=True)  # no mask alone
    meta["concurrency_method"] = "the engine's decode round over B requests (Engine.step)"
    return CloudProfile(
        prefill=prefill, decode=decode, batch=batch, meta=meta, measurements=measurements
    )


def _measure(target: Target, opts: ProfileOptions) -> None:
    from common.model import load_model
    from common.platform import set_threads

    set_threads(opts.threads)
    loaded = load_model(opts.model)
    profile = build_profile(
        loaded,
        target,
        opts.chosen_lengths,
        opts.chosen_repeats,
        opts.device_slowdown,
        opts.threads,
        opts.name,
        QUICK_CONCURRENCY if opts.quick else FULL_CONCURRENCY,
    )
    profile.meta["options"] = config_json(opts)
    save_profile(profile, opts.output)
    p, d = profile.prefill, profile.decode
    typer.echo(
        f"{target.value} profile -> {opts.output}: prefill {p.a * 1e3:.1f} ms"
        f" + {p.b * 1e3:.3f} ms/tok + {p.c * 1e6:.4f} us/tok^2 (max rel err {p.max_rel_err:.1%});"
        f" decode {d.d0 * 1e3:.1f} ms + {d.d1 * 1e6:.2f} us/ctx-tok"
    )
    if isinstance(profile, CloudProfile):
        b = profile.batch
        lone = f"; alone {b.lone_s * 1e3:.1f} ms" if b.lone_s is not None else ""
        typer.echo(f"  batch step {b.e0 * 1e3:.1f} ms + {b.e1 * 1e3:.2f} ms/request{lone}")


def _bad_parameter(message: str) -> NoReturn:
    raise typer.BadParameter(message)


@command_from(ProfileOptions, on_error=_bad_parameter)
def profile_device(opts: ProfileOptions) -> None:
    """Measure this machine as a device (prefill and decode), K times slower; fit the cost model."""
    _measure(Target.device, opts)


@command_from(ProfileOptions, on_error=_bad_parameter)
def profile_cloud(opts: ProfileOptions) -> None:
    """Measure this machine as the cloud (prefill, decode, batched decode); fit the cost model."""
    _measure(Target.cloud, opts)


def list_shipped() -> None:
    """List the shipped profiles and example settings (names usable wherever a path is).

    The profiles were measured here or derived from published figures."""
    from benchmarks.planner.profiles import prompt_range, shipped_profiles, shipped_settings
    from common.profiles import load_profile

    typer.echo(f"{'name':26s} {'kind':6s} {'source':8s} {'prompt<=':>9s}  what")
    for entry in shipped_profiles():
        _, valid = prompt_range(load_profile(entry.path, entry.kind))
        typer.echo(
            f"{entry.name:26s} {entry.kind:6s} {entry.source:8s} {valid or '?':>9}  {entry.summary}"
        )
    typer.echo(
        "settings (pdd tune output, for --settings): "
        + ", ".join(p.stem for p in shipped_settings())
    )


profile_app = typer.Typer(
    help="Measure the real model (prefill, decode, cloud concurrency) and fit the cost model "
    "that `pdd tune` and `pdd simulate` read; or list the shipped profiles.",
    no_args_is_help=True,
    add_completion=False,
)
profile_app.command("device")(profile_device)
profile_app.command("cloud")(profile_cloud)
profile_app.command("list")(list_shipped)
