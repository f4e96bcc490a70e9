"""vLLM serving study: our service on the vLLM engine against vLLM's own OpenAI server, and our
two engines against each other, all driven by vLLM's own benchmark client (``vllm bench serve``,
``--backend openai`` on ``/v1/completions``).

    python -m benchmarks.studies.vllm_serving [--threads 2] [--concurrency 1,8] \
        [--num-prompts 8,24] [--input-len 512] [--output-len 64] [--servers pdd-vllm,vllm,pdd-builtin]

Needs the ``vllm`` extra. Servers run one at a time, each alone on the machine, with the same
threads, slots (``--max-concurrent`` = ``--max-num-seqs`` = the largest concurrency) and context.
Requests are greedy (``--temperature 0``), so every server produces the same tokens and answers
have the same lengths; ``--temperature`` > 0 compares samplers too (ours runs inside vLLM as a
logits processor). vLLM's client sends ``ignore_eos`` with random prompts (both engines take it), so
every answer has ``--output-len`` tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from common.model import resolve_model_dir
from device_client import embedded

MODEL = "smollm2-135m"
START_TIMEOUT_S = 900.0  # a first vLLM start compiles the model
METRICS = ("output_throughput", "median_ttft_ms", "median_tpot_ms", "median_itl_ms")


def start_pdd(engine: str, threads: int, slots: int, log_dir: Path) -> tuple[str, Callable]:
    """``pdd serve --engine ENGINE``; returns (url, stop)."""
    embedded.START_TIMEOUT_S = START_TIMEOUT_S
    args = ["--engine", engine, "--max-concurrent", str(slots), "--vllm-max-model-len", "2048"]
    cloud = embedded.start_cloud(*args, threads=threads, log_dir=log_dir)
    return cloud.http_url, lambda: cloud.stop(timeout_s=30.0)


def start_vllm_openai(threads: int, slots: int, log_dir: Path) -> tuple[str, Callable]:
    """vLLM's own OpenAI server on the same folder, threads, slots and KV cache."""
    port = embedded.free_port()
    env = os.environ | {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": str(threads),
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--model", str(resolve_model_dir(MODEL))]
    cmd += ["--served-model-name", MODEL, "--dtype", "float32", "--max-model-len", "2048"]
    cmd += ["--max-num-seqs", str(slots), "--disable-uvicorn-access-log"]
    log = (log_dir / f"vllm-{port}.log").open("wb")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM's server exited early; see {log.name}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)

    def stop() -> None:
        process.terminate()
        process.wait(60)
        log.close()

    return url, stop


def run_client(url: str, args: argparse.Namespace, concurrency: int, num_prompts: int) -> dict:
    """One ``vllm bench serve`` run (in this process) against ``url``."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    bench = parser.parse_args(
        [
            "--backend",
            "openai",
            "--base-url",
            url,
            "--endpoint",
            "/v1/completions",
            "--model",
            MODEL,
            "--tokenizer",
            str(resolve_model_dir(MODEL)),
            "--dataset-name",
            "random",
            "--random-input-len",
            str(args.input_len),
            "--random-output-len",
            str(args.output_len),
            "--num-prompts",
            str(num_prompts),
            "--max-concurrency",
            str(concurrency),
            "--temperature",
            str(args.temperature),
            "--seed",
            "0",
            "--num-warmups",
            "1",
            "--disable-tqdm",
        ]  # fmt: skip
    )
    result = main(bench)
    return {k: result[k] for k in (*METRICS, "completed", "total_output_tokens")}


SERVERS = {
    "pdd-vllm": lambda a, d: start_pdd("vllm", a.threads, max(a.concurrency), d),
    "vllm": lambda a, d: start_vllm_openai(a.threads, max(a.concurrency), d),
    "pdd-builtin": lambda a, d: start_pdd("builtin", a.threads, max(a.concurrency), d),
}


def ratio_rows(results: dict, ours: str, theirs: str, concurrency: list[int]) -> list[str]:
    rows = []
    for c in concurrency:
        a, b = results.get((ours, c)), results.get((theirs, c))
        if a and b:
            ttft = a["median_ttft_ms"] / b["median_ttft_ms"]
            tpot = a["median_tpot_ms"] / b["median_tpot_ms"]
            rows.append(f"| {ours} / {theirs} | {c} | {ttft:.2f}x | {tpot:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--num-prompts", default="8,24", help="per concurrency, same order")
    parser.add_argument("--input-len", type=int, default=512)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--servers", default="pdd-vllm,vllm,pdd-builtin")
    parser.add_argument("--save-result", default=None, help="JSON file for the numbers")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    num_prompts = [int(n) for n in args.num_prompts.split(",")]
    log_dir = Path(tempfile.mkdtemp(prefix="pdd-vllm-serving-"))
    results: dict = {}
    for name in args.servers.split(","):
        url, stop = SERVERS[name](args, log_dir)
        try:
            for c, n in zip(args.concurrency, num_prompts, strict=True):
                results[(name, c)] = run_client(url, args, c, n)
        finally:
            stop()
    print(f"\nlogs in {log_dir}\n")
    print(
        "| server | concurrency | output tok/s | median TTFT ms | median TPOT ms | median ITL ms |"
    )
    print("|---|---|---|---|---|---|")
    for (name, c), r in results.items():
        print(
            f"| {name} | {c} | {r['output_throughput']:.1f} | {r['median_ttft_ms']:.0f} | "
            f"{r['median_tpot_ms']:.1f} | {r['median_itl_ms']:.1f} |"
        )
    print("\n| ratio | concurrency | median TTFT | median TPOT |\n|---|---|---|---|")
    for ours, theirs in (("pdd-vllm", "vllm"), ("pdd-builtin", "pdd-vllm")):
        print("\n".join(ratio_rows(results, ours, theirs, args.concurrency)))
    if args.save_result:
        rows = [{"server": n, "concurrency": c} | r for (n, c), r in results.items()]
        Path(args.save_result).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
