"""Chunked prefill: how long a long prompt's prefill pauses the streams already decoding.

    pdd study chunked-prefill [--threads 2] [--prompt-tokens 2048] [--chunks 0,128,256,512,1024]
                              [--refine-ratio 0.5]
    (or python -m benchmarks.studies.chunked_prefill, the same options)

Runs the real engine (worker thread, real model) in this process, once per chunk size, same
requests: ``--num-decoding`` requests decode while a ``--prompt-tokens`` prompt arrives. Reported
per chunk size: the largest gap between two tokens of the decoding requests (what a pd device
sees as a stall in the cloud's stream), the long prompt's TTFT, and both as ratios to chunk 0
(whole prompts, prefill first).
"""

from __future__ import annotations

import asyncio
import random
import time

from benchmarks.bench.workloads import PromptMaker
from cloud_server.config import EngineConfig
from cloud_server.engine import Engine
from common.messages import FirstToken, GenerateRequest, Token
from common.model import load_model
from common.platform import set_threads

from .engine_scaling import DECODE_PROMPT, request, timed_events
from .options import ChunkedPrefillOptions, fail


async def one_run(
    engine: Engine, long_ids: list[int], num_decoding: int, refine_ratio: float = 0.0
) -> tuple[float, float]:
    """(largest gap in the decoding streams, TTFT of the long prompt), seconds."""
    decoding = [
        asyncio.create_task(timed_events(engine, request(DECODE_PROMPT, 200)))
        for _ in range(num_decoding)
    ]
    while engine.runner.batch.num_rows < num_decoding:  # all of them decode
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    start = time.perf_counter()
    long_req = GenerateRequest(
        prompt_ids=long_ids, max_tokens=2, cloud_tokens=1, refine_ratio=refine_ratio
    )
    long_events = await timed_events(engine, long_req)
    ttft = next(t for t, e in long_events if isinstance(e, FirstToken)) - start
    runs = await asyncio.gather(*decoding)
    gaps = []
    for run in runs:
        times = [t for t, e in run if isinstance(e, FirstToken | Token)]
        gaps += [b - a for a, b in zip(times[:-1], times[1:], strict=True) if b > start]
    return max(gaps), ttft


async def main_async(args: ChunkedPrefillOptions) -> None:
    set_threads(args.threads)
    loaded = load_model()
    long_ids = PromptMaker(loaded).make(args.prompt_tokens, random.Random(0))
    rows = []
    for chunk in [int(c) for c in args.chunks.split(",")]:
        config = EngineConfig(  # no prefix cache: the warm-up prompt is a prefix of the long one
            max_concurrent_requests=args.num_decoding + 1,
            prefill_chunk_tokens=chunk,
            prefix_cache_bytes=0,
        )
        engine = Engine(loaded, config)
        engine.start()
        try:
            await one_run(engine, long_ids[:300], args.num_decoding, args.refine_ratio)  # warm-up
            run = await one_run(engine, long_ids, args.num_decoding, args.refine_ratio)
            rows.append((chunk, *run))
        finally:
            engine.stop()
    refine = f", refine ratio {args.refine_ratio:g}" if args.refine_ratio > 0 else ""
    print(
        f"threads={args.threads} prompt={len(long_ids)} tokens{refine}, "
        f"{args.num_decoding} decoding"
    )
    base_gap, base_ttft = rows[0][1], rows[0][2]
    print(f"{'chunk':>6}{'max gap s':>11}{'gap ratio':>11}{'long TTFT s':>13}{'TTFT ratio':>12}")
    for chunk, gap, ttft in rows:
        print(
            f"{chunk:>6}{gap:>11.3f}{gap / base_gap:>10.2f}x{ttft:>13.3f}{ttft / base_ttft:>11.2f}x"
        )


if __name__ == "__main__":
    import typer

    from common.cli_options import command_from

    typer.run(
        command_from(ChunkedPrefillOptions, on_error=fail)(
            lambda options: asyncio.run(main_async(options))
        )
    )
