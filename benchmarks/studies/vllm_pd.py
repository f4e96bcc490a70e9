"""pd on a vLLM cloud against pd on the builtin cloud: ``pdd bench`` (device-only, cloud-only, pd)
against each, side by side in one run.

    pdd study vllm-pd [--input-lens 512,1024,2048] [--output-len 128] [--num-prompts 2] \
        [--device-slowdown 4] [--rtt-ms 50] [--threads 1] [--settings S.json]

Per engine, one at a time (so each cloud has the cores to itself, with the same threads):
1. start ``pdd serve --engine E`` with its prefix cache off (``--prefix-cache-mb 0``: every mode
   runs the same prompts, so a cache would let pd reuse cloud-only's prefill);
2. profile that cloud over the wire (its own prefill times from the first-token events, decode
   per token from the stream) and ``tune`` the settings from it and the device profile (measured
   here first, on the real device model, K times slower), unless ``--settings`` is given; the
   tuner is told whether the engine can score prompts (vLLM cannot: rho = 0);
3. run the same ``pdd bench`` requests against it (``--cloud URL``). Device-only does not touch
   the cloud, so it runs once, in the first engine's bench, and both are compared against it.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console

from benchmarks.bench.command import run_bench
from benchmarks.bench.options import BenchOptions
from benchmarks.planner.profile import Target, build_profile
from benchmarks.planner.tuner import TuneConfig, tune
from common.messages import End, FirstToken, GenerateRequest, Token
from common.profiles import (
    BatchCost,
    CloudProfile,
    NetworkProfile,
    fit_decode,
    fit_prefill,
    save_profile,
)
from device_client import embedded
from device_client.config import ClientConfig
from device_client.transports import open_stream

from .options import VllmPdOptions

START_TIMEOUT_S = 900.0  # a first vLLM start compiles the model
DECODE_TOKENS = 16  # tokens per decode probe of the wire profile


def start_cloud(engine: str, opts: VllmPdOptions, log_dir: Path) -> embedded.EmbeddedCloud:
    embedded.START_TIMEOUT_S = START_TIMEOUT_S
    context = max(opts.input_lens) + opts.output_len + 64
    args = ["--engine", engine, "--max-concurrent", "4", "--prefix-cache-mb", "0"]
    args += ["--vllm-max-model-len", str(context)]
    return embedded.start_cloud(*args, threads=opts.threads, log_dir=log_dir)


# ---- the cloud's profile, measured over the wire ---------------------------------------------


async def _probe(url: str, prompt_ids: list[int], num_tokens: int) -> tuple[float, float | None]:
    """One request alone: (the engine's prefill_s, client-side seconds per decoded token)."""
    request = GenerateRequest(prompt_ids=prompt_ids, max_tokens=num_tokens, cloud_tokens=num_tokens)
    stream = await open_stream(request, ClientConfig(cloud_url=url))
    prefill_s, times = float("nan"), []
    try:
        async for event in stream.events():
            if isinstance(event, FirstToken):
                prefill_s = event.prefill_s
            if isinstance(event, FirstToken | Token):
                times.append(time.monotonic())
            if isinstance(event, End):
                break
    finally:
        await stream.aclose()
    per_token = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    return prefill_s, per_token


def random_ids(num_tokens: int, vocab_size: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(256, vocab_size) for _ in range(num_tokens)]


def profile_lengths(input_lens: list[int]) -> list[int]:
    return sorted({n for length in input_lens for n in (length // 4, length // 2, length)} - {0})


async def wire_profile(url: str, engine: str, lengths: list[int], vocab: int) -> CloudProfile:
    """Prefill per length (fastest of 2) and decode per token at 3 contexts, batch 1 only."""
    prefill = []
    for length in lengths:
        ids = random_ids(length, vocab, seed=length)
        prefill.append(min([(await _probe(url, ids, 1))[0] for _ in range(2)]))
    contexts = sorted({lengths[0], lengths[len(lengths) // 2], lengths[-1]})
    decode = []
    for ctx in contexts:
        _, per_token = await _probe(url, random_ids(ctx, vocab, seed=ctx + 1), 1 + DECODE_TOKENS)
        decode.append(per_token)
    health = httpx.get(url + "/health", timeout=10.0).json()
    meta = {
        "name": f"cloud-{engine}-wire",
        "source": "measured over the wire (benchmarks/studies/vllm_pd.py)",
        "target": "cloud",
        "engine": engine,
        "platform": health["platform"],
        "model_fingerprint": health["fingerprint"],
        "can_score_prompts": health.get("can_score_prompts", engine == "builtin"),
        "measured_max_prompt_len": max(lengths),
        "concurrency_method": "not measured: batch 1 only (the bench runs one request at a time)",
    }
    measurements = {
        "prefill": [{"length": n, "median_s": t} for n, t in zip(lengths, prefill, strict=True)],
        "decode": [{"context": c, "median_s": t} for c, t in zip(contexts, decode, strict=True)],
    }
    return CloudProfile(
        prefill=fit_prefill([float(n) for n in lengths], prefill),
        decode=fit_decode([float(c) for c in contexts], decode),
        batch=BatchCost(e0=1.0),
        meta=meta,
        measurements=measurements,
    )


# ---- one engine ------------------------------------------------------------------------------


def bench_options(opts: VllmPdOptions, url: str, modes: str, settings: Path, out: Path):
    return BenchOptions(
        modes=modes,
        cloud=url,
        input_lens=list(opts.input_lens),
        output_len=opts.output_len,
        num_prompts=opts.num_prompts,
        device_slowdown=opts.device_slowdown,
        device_threads=opts.device_threads,
        rtt_ms=opts.rtt_ms,
        settings_path=settings,
        save_result=out,
    ).resolved()


def run_engine(engine: str, modes: str, opts: VllmPdOptions, device, lm, out: Path, console):
    """Start the cloud, tune for it (unless --settings), bench it, stop it."""
    cloud = start_cloud(engine, opts, out)
    try:
        settings_path = opts.settings
        if settings_path is None:
            lengths = profile_lengths(opts.input_lens)
            vocab = lm.model.config.vocab_size
            profile = asyncio.run(wire_profile(cloud.http_url, engine, lengths, vocab))
            save_profile(profile, out / f"cloud_{engine}.json")
            cfg = TuneConfig(
                input_lens=list(opts.input_lens),
                output_len=opts.output_len,
                network=NetworkProfile(rtt_s=opts.rtt_ms / 1e3),
                cloud_can_score=bool(profile.meta["can_score_prompts"]),
            )
            settings_path = out / f"settings_{engine}.json"
            tune(device, profile, cfg).save(settings_path)
        bench = bench_options(opts, cloud.http_url, modes, settings_path, out / f"{engine}.json")
        return run_bench(bench, console)
    finally:
        cloud.stop(timeout_s=30.0)


# ---- the table -------------------------------------------------------------------------------


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def engine_rows(result: dict, device_by_len: dict, device_ids: dict) -> dict[str, dict]:
    """Per prompt length: TTFT cut, p99 max gap / τd, busy ratio, m, N, identical answers."""
    rows = {}
    for length, modes in result["by_input_len"].items():
        dev, pd, cloud = device_by_len.get(length), modes.get("pd"), modes.get("cloud")
        pd_reqs = [
            r for r in result["requests"] if r["mode"] == "pd" and r["input_len"] == int(length)
        ]
        same = sum(r["token_ids"] == device_ids.get(r["index"]) for r in pd_reqs)
        rows[length] = {
            "pd_ttft_ms": pd and pd["median_ttft_ms"],
            "ttft_cut": 1 - _ratio(pd["median_ttft_ms"], dev["median_ttft_ms"])
            if pd and dev
            else None,
            "gap_over_tau_d": _ratio(pd and pd["p99_max_tpot_ms"], dev and dev["median_tpot_ms"]),
            "busy_cloud_s": cloud and cloud["mean_cloud_busy_s"],
            "busy_pd_s": pd and pd["mean_cloud_busy_s"],
            "busy_ratio": _ratio(
                cloud and cloud["mean_cloud_busy_s"], pd and pd["mean_cloud_busy_s"]
            ),
            "m": pd and pd["mean_handoff_index"],
            "identical": f"{same}/{len(pd_reqs)}",
        }
    return rows


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(rows: dict[str, dict[str, dict]], device_by_len: dict) -> None:
    engines = list(rows)
    print("\n| prompt L | device-only TTFT | engine | pd TTFT | TTFT cut | p99 max gap / τd "
          "| cloud busy s: cloud-only / pd | ratio | m | pd = device-only |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for length in rows[engines[0]]:
        dev = device_by_len.get(length) or {}
        for engine in engines:
            r = rows[engine].get(length, {})
            busy = f"{_cell(r.get('busy_cloud_s'), '.2f')} / {_cell(r.get('busy_pd_s'), '.2f')}"
            print(
                f"| {length} | {_cell(dev.get('median_ttft_ms'), '.0f')} ms | {engine} "
                f"| {_cell(r.get('pd_ttft_ms'), '.0f')} ms | {_cell(r.get('ttft_cut'), '.0%')} "
                f"| {_cell(r.get('gap_over_tau_d'), '.2f')} | {busy} "
                f"| {_cell(r.get('busy_ratio'), '.2f')} | {_cell(r.get('m'), '.1f')} "
                f"| {r.get('identical', '-')} |"
            )


def main(opts: VllmPdOptions) -> dict:
    from benchmarks.bench.resources import load_device_model

    console = Console()
    out = opts.output_dir or Path(tempfile.mkdtemp(prefix="pdd-vllm-pd-"))
    out.mkdir(parents=True, exist_ok=True)
    lm = load_device_model(BenchOptions(device_threads=opts.device_threads))
    device = None
    if opts.settings is None:  # the device as the bench emulates it: K times this machine
        lengths = profile_lengths(opts.input_lens)
        device = build_profile(
            lm, Target.device, lengths, 2, opts.device_slowdown, opts.device_threads
        )
        save_profile(device, out / "device.json")
    results: dict[str, dict] = {}
    for i, engine in enumerate(opts.engines):
        modes = "device,cloud,pd" if i == 0 else "cloud,pd"
        results[engine] = run_engine(engine, modes, opts, device, lm, out, console)
    first = results[opts.engines[0]]
    device_by_len = {k: v.get("device") for k, v in first["by_input_len"].items()}
    device_ids = {r["index"]: r["token_ids"] for r in first["requests"] if r["mode"] == "device"}
    rows = {e: engine_rows(r, device_by_len, device_ids) for e, r in results.items()}
    print_table(rows, device_by_len)
    tau_d = [v["median_tpot_ms"] for v in device_by_len.values() if v and v["median_tpot_ms"]]
    print(
        f"\ndevice τd (device-only median TPOT): {statistics.median(tau_d):.0f} ms" if tau_d else ""
    )
    print(f"files (profiles, settings, bench results) in {out}")
    (out / "vllm_pd.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    import typer

    from common.cli_options import command_from

    from .options import fail

    typer.run(command_from(VllmPdOptions, on_error=fail)(main))
