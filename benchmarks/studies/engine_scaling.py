"""Engine scaling: batched decode throughput (8 concurrent vs 1) and TTFT under decode load.

    pdd study engine-scaling [--threads 2] [--num-concurrent 8] [--decode-tokens 48]
    (or python -m benchmarks.studies.engine_scaling, the same options)

Runs the real engine (worker thread, real model) in this process. Decode throughput is measured
in the steady window where every request is decoding (after the last first token, before the
first end), so prefills do not count. TTFT under load: a new request arrives while
``num_concurrent`` others decode; compared with the same request on an idle engine.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from cloud_server.config import EngineConfig
from cloud_server.engine import Engine
from common.messages import End, FirstToken, GenerateRequest, Token
from common.model import load_model
from common.platform import set_threads

from .options import EngineScalingOptions, fail

DECODE_PROMPT = "Once upon a time"
TTFT_PROMPT = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)  # ~130 tokens


def request(prompt: str, num_tokens: int) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, raw=True, max_tokens=num_tokens, cloud_tokens=num_tokens)


async def timed_events(engine: Engine, req: GenerateRequest) -> list[tuple[float, object]]:
    stream = engine.submit(req)
    return [(time.perf_counter(), event) async for event in stream]


async def decode_rate(engine: Engine, num_requests: int, num_tokens: int) -> float:
    """Tokens per second over all requests while all of them decode."""
    runs = await asyncio.gather(
        *(timed_events(engine, request(DECODE_PROMPT, num_tokens)) for _ in range(num_requests))
    )
    start = max(t for run in runs for t, e in run if isinstance(e, FirstToken))
    stop = min(t for run in runs for t, e in run if isinstance(e, End))
    num = sum(1 for run in runs for t, e in run if isinstance(e, Token) and start < t <= stop)
    return num / (stop - start)


async def ttft(engine: Engine) -> float:
    start = time.perf_counter()
    stream = engine.submit(request(TTFT_PROMPT, 1))
    async for event in stream:
        if isinstance(event, FirstToken):
            first = time.perf_counter()
    return first - start


async def ttft_under_load(engine: Engine, num_load: int, num_tokens: int, num_probes: int) -> list:
    """TTFT of probes sent one after another while ``num_load`` requests decode."""
    load = [
        asyncio.create_task(timed_events(engine, request(DECODE_PROMPT, num_tokens)))
        for _ in range(num_load)
    ]
    while engine.runner.batch.num_rows < num_load:  # wait until all of them decode
        await asyncio.sleep(0.01)
    out = []
    for _ in range(num_probes):
        out.append(await ttft(engine))
        await asyncio.sleep(0.05)
    assert engine.runner.batch.num_rows >= num_load, "the load ended before the probes"
    await asyncio.gather(*load)
    return out


async def main_async(args: EngineScalingOptions) -> None:
    set_threads(args.threads)
    loaded = load_model()
    config = EngineConfig(max_concurrent_requests=args.num_concurrent + 1, prefix_cache_bytes=0)
    engine = Engine(loaded, config)  # no prefix cache: every TTFT probe repeats one prompt
    engine.start()
    try:
        await decode_rate(engine, 1, 8)  # warm the batched path
        rate_1 = await decode_rate(engine, 1, args.decode_tokens)
        rate_n = await decode_rate(engine, args.num_concurrent, args.decode_tokens)
        idle = [await ttft(engine) for _ in range(args.num_probes)]
        loaded_ttft = await ttft_under_load(
            engine, args.num_concurrent, args.decode_tokens * 3, args.num_probes
        )
    finally:
        engine.stop()
    report(args, rate_1, rate_n, statistics.median(idle), statistics.median(loaded_ttft))


def report(args: EngineScalingOptions, rate_1: float, rate_n: float, idle: float, busy: float):
    n = args.num_concurrent
    print(f"threads={args.threads} decode_tokens={args.decode_tokens} probes={args.num_probes}")
    print(f"{'metric':<34}{'1 / idle':>12}{f'{n} / loaded':>14}{'ratio':>9}{'target':>10}")
    print(
        f"{'decode tokens/s (engine total)':<34}{rate_1:>12.1f}{rate_n:>14.1f}"
        f"{rate_n / rate_1:>8.2f}x{'>= 3x':>10}"
    )
    print(
        f"{'TTFT median, ~130-token prompt (s)':<34}{idle:>12.3f}{busy:>14.3f}"
        f"{busy / idle:>8.2f}x{'<= 2x':>10}"
    )


if __name__ == "__main__":
    import typer

    from common.cli_options import command_from

    typer.run(
        command_from(EngineScalingOptions, on_error=fail)(
            lambda options: asyncio.run(main_async(options))
        )
    )
