"""Serving overhead: the decode round of the served cloud against the bare engine step.

    python -m benchmarks.studies.serving_overhead [--threads 2,1] [--batch 2] [--tokens 80]

For each torch thread count, in a fresh process: the median decode round with ``--batch``
requests decoding, measured three ways, plus a 512-token prefill:
- *step*: ``Engine.step()`` called in a loop (what ``pdd profile cloud`` times);
- *thread*: the engine on its worker thread, tokens read by asyncio consumers (``engine.start()``,
  as ``pdd serve`` runs it), the median gap between two tokens of one stream;
- *http*: ``pdd serve`` in a subprocess, streamed over HTTP (``/v1/completions``), the same gap.
Ratios are to *step* of the same process. Found with it (2-core CPU): with 2 torch threads the
served round is ~25% slower than the step, with 1 thread ~2%: the event loop and the HTTP
server need a core, and 2 OpenMP threads on 2 cores wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time

import httpx

PROMPT = "Once upon a time"
PORT = 8179


def _median_gap(streams: list[list[float]], skip: int = 10) -> float:
    gaps = [b - a for ts in streams for a, b in zip(ts[skip:-1], ts[skip + 1 :], strict=True)]
    return statistics.median(gaps)


def measure(threads: int, batch: int, tokens: int) -> dict:
    from cloud_server.config import EngineConfig
    from cloud_server.engine import Engine
    from common.forward import forward_tokens, new_cache
    from common.messages import FirstToken, GenerateRequest, Token
    from common.model import load_model
    from common.platform import set_threads

    set_threads(threads)
    loaded = load_model()
    config = EngineConfig(max_concurrent_requests=batch + 1, prefix_cache_bytes=0)

    def request(i: int) -> GenerateRequest:
        return GenerateRequest(
            prompt=PROMPT, raw=True, max_tokens=tokens, cloud_tokens=tokens - 1, request_id=f"r{i}"
        )

    async def step_loop() -> float:
        engine = Engine(loaded, config)
        streams = [engine.submit(request(i)) for i in range(batch)]
        rounds = []
        while engine.num_active:
            start = time.perf_counter()
            engine.step()
            rounds.append(time.perf_counter() - start)
        for stream in streams:
            async for _ in stream:
                pass
        return statistics.median(rounds[batch + 10 :])  # decode rounds past the prefills

    async def worker_thread() -> float:
        engine = Engine(loaded, config)
        engine.start()

        async def one(i: int) -> list[float]:
            stream = engine.submit(request(i))
            return [time.perf_counter() async for e in stream if isinstance(e, FirstToken | Token)]

        try:
            return _median_gap(await asyncio.gather(*(one(i) for i in range(batch))))
        finally:
            engine.stop()

    def prefill_512() -> float:
        times = []
        for _ in range(3):
            cache = new_cache(loaded.model)
            start = time.perf_counter()
            forward_tokens(loaded.model, list(range(100, 612)), list(range(512)), cache)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return {
        "threads": threads,
        "step_s": asyncio.run(step_loop()),
        "thread_s": asyncio.run(worker_thread()),
        "http_s": _served(threads, batch, tokens),
        "prefill_512_s": prefill_512(),
    }


def _served(threads: int, batch: int, tokens: int) -> float:
    args = [sys.executable, "-m", "cloud_server", "--threads", str(threads), "--port", str(PORT)]
    args += ["--grpc-port", "0", "--max-concurrent", str(batch + 1), "--prefix-cache-mb", "0"]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{PORT}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        model = httpx.get(f"{base}/v1/models").json()["data"][0]["id"]
        body = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "stream": True}
        body |= {"ignore_eos": True}

        async def run() -> float:
            async with httpx.AsyncClient(timeout=300) as client:

                async def one() -> list[float]:
                    times = []
                    async with client.stream("POST", f"{base}/v1/completions", json=body) as r:
                        async for line in r.aiter_lines():
                            if line.startswith("data:") and "[DONE]" not in line:
                                times.append(time.perf_counter())
                    return times

                await one()  # warm-up
                return _median_gap(await asyncio.gather(*(one() for _ in range(batch))))

        return asyncio.run(run())
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="2,1", help="torch thread counts, one process each")
    parser.add_argument("--batch", type=int, default=2, help="requests decoding at once")
    parser.add_argument("--tokens", type=int, default=80, help="tokens per request")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one thread count
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.batch, args.tokens)))
        return
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        child = [sys.executable, "-m", "benchmarks.studies.serving_overhead", "--one", str(threads)]
        child += ["--batch", str(args.batch), "--tokens", str(args.tokens)]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"decode round, B = {args.batch} (median, ms) and a 512-token prefill")
    print(f"{'threads':>7}{'step':>8}{'thread':>15}{'http':>15}{'prefill 512':>13}")
    for r in rows:
        step = r["step_s"]
        print(
            f"{r['threads']:>7}{step * 1e3:>8.1f}"
            f"{r['thread_s'] * 1e3:>9.1f} {r['thread_s'] / step:>4.2f}x"
            f"{r['http_s'] * 1e3:>9.1f} {r['http_s'] / step:>4.2f}x"
            f"{r['prefill_512_s'] * 1e3:>11.0f} ms"
        )


if __name__ == "__main__":
    main()
