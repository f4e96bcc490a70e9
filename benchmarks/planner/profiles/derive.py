"""Derived profiles: published figures of real phones and accelerator clouds, as cost models.

``python -m benchmarks.planner.profiles.derive`` writes one JSON per class below into this folder.
Every number comes from one row of the design brief's ``HARDWARE.md`` (``shared/design/`` beside
the repository; its source is named in ``meta.derived_from``); where a cost model needs more
than the row gives (a length curve, the context term of decode, a prefill rate the row does not
state), the step is listed in ``meta.assumptions`` with the arithmetic. These are not measurements: ``meta.source`` is
``"derived"`` and ``pdd profile list`` says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.profiles import (
    BatchCost,
    CloudProfile,
    DecodeCost,
    DeviceProfile,
    PrefillCost,
    fit_batch,
    profile_to_dict,
)

# The one row with a length curve (LiteRT, Galaxy S24 Ultra CPU, Qwen2.5-1.5B int8): prefill
# 106 tok/s at 1,280 and 63 at 4,096 tokens of context; decode 23 and 20 tok/s. As
# 1/rate = b + c·L (prefill) and τ = d0 + d1·ctx (decode) it gives the relative slopes below,
# applied to the phone rows that give one length only (an assumption, stated in each file).
_LITERT_B = 1 / 106 - 1280 * ((1 / 63 - 1 / 106) / (4096 - 1280))
PREFILL_SLOPE = ((1 / 63 - 1 / 106) / (4096 - 1280)) / _LITERT_B  # c/b, per token
_LITERT_D1 = (1 / 20 - 1 / 23) / (4096 - 1280)
DECODE_SLOPE = _LITERT_D1 / (1 / 23 - 1280 * _LITERT_D1)  # d1/d0, per context token
PHONE_MEASURED_MAX = 4096  # the longest context any phone row reports
PHONE_VALID_MAX = 8192  # 2x that; past it the curve is a guess


@dataclass(frozen=True)
class PhoneRow:
    name: str
    hardware: str
    runtime: str
    model: str
    prefill_tok_s: float
    prefill_at_len: int  # the prompt length the figure was measured at
    decode_tok_s: float
    decode_at_ctx: int
    source: str
    row: str  # the row as HARDWARE.md writes it


PHONES = [
    PhoneRow(
        "phone-llama1b-q4",
        "OnePlus 12 (Snapdragon 8 Gen 3)",
        "ExecuTorch",
        "Llama 3.2 1B SpinQuant (4-bit)",
        260.5,
        64,
        50.2,
        64,
        "pytorch/executorch examples/models/llama/README.md",
        "ExecuTorch, OnePlus 12 (Snapdragon 8 Gen 3), 64-token prompt | Llama 3.2 1B SpinQuant "
        "(4-bit) | 260.5 | 50.2 (TTFT 0.3 s)",
    ),
    PhoneRow(
        "phone-llama3b-q4",
        "OnePlus 12 (Snapdragon 8 Gen 3)",
        "ExecuTorch",
        "Llama 3.2 3B SpinQuant (4-bit)",
        89.7,
        64,
        19.7,
        64,
        "pytorch/executorch examples/models/llama/README.md",
        "same (ExecuTorch, OnePlus 12, 64-token prompt) | Llama 3.2 3B SpinQuant | 89.7 | 19.7",
    ),
    PhoneRow(
        "phone-qwen1.5b-llamacpp",
        "Snapdragon 8 Gen 3 (OpenCL GPU)",
        "llama.cpp",
        "Qwen 1.5B",
        239.0,
        512,
        27.0,
        512,
        "ggml-org/llama.cpp issue 14337",
        "llama.cpp OpenCL, Snapdragon 8 Gen 3 | Qwen 1.5B | 239 | 27 (model load 7.7 s)",
    ),
    PhoneRow(
        "phone-qwen1.5b-litert",
        "Galaxy S24 Ultra (CPU, int8)",
        "LiteRT",
        "Qwen2.5-1.5B-Instruct",
        106.0,
        1280,
        23.0,
        1280,
        "model card of An-Upfeat/Qwen2.5-1.5B-Instruct (LiteRT)",
        "LiteRT, Galaxy S24 Ultra CPU, int8 | Qwen2.5-1.5B-Instruct | 106 (1,280 ctx), "
        "63 (4,096 ctx) | 23, 20",
    ),
]


def phone_profile(row: PhoneRow) -> DeviceProfile:
    """1/rate(L) = b·(1 + k·L) through the row's rate at its length; τ = d0·(1 + k'·ctx)."""
    b = 1.0 / (row.prefill_tok_s * (1.0 + PREFILL_SLOPE * row.prefill_at_len))
    d0 = 1.0 / (row.decode_tok_s * (1.0 + DECODE_SLOPE * row.decode_at_ctx))
    assumptions = [
        f"prefill Tpd(L) = b·L + c·L² with the row's {row.prefill_tok_s:g} tok/s at "
        f"L = {row.prefill_at_len}; c/b = {PREFILL_SLOPE:.3e}/token, the slope of the LiteRT "
        "row (106 tok/s at 1,280, 63 at 4,096), as no other row gives a length curve",
        f"decode τd(ctx) = d0 + d1·ctx with the row's {row.decode_tok_s:g} tok/s at ctx "
        f"{row.decode_at_ctx}; d1/d0 = {DECODE_SLOPE:.3e}/token from the LiteRT row (23 -> 20 tok/s)",
        "a = 0: no fixed cost per prefill (model load, e.g. 7.7 s in llama.cpp, is once per app)",
        f"valid up to {PHONE_VALID_MAX} tokens: 2x the longest context a phone row reports",
    ]
    meta = {
        "name": row.name,
        "source": "derived",
        "target": "device",
        "hardware": row.hardware,
        "runtime": row.runtime,
        "model": row.model,
        "derived_from": {"file": "HARDWARE.md", "row": row.row, "source": row.source},
        "assumptions": assumptions,
        "measured_max_prompt_len": PHONE_MEASURED_MAX,
        "valid_max_prompt_len": PHONE_VALID_MAX,
    }
    prefill = PrefillCost(a=0.0, b=b, c=PREFILL_SLOPE * b)
    decode = DecodeCost(d0=d0, d1=DECODE_SLOPE * d0)
    return DeviceProfile(prefill=prefill, decode=decode, meta=meta)


def h100_llama8b() -> CloudProfile:
    """NVIDIA NIM, Llama-3.1-8B on (likely) one H100: ITL vs concurrency; prefill from the
    70B-FP8 row scaled by parameters and GPUs."""
    levels, itl = [1, 25, 100, 250], [0.0046, 0.0052, 0.0076, 0.0161]
    batch = fit_batch(levels, itl)
    b = 0.407 / 5000 * 2 * 8 / 70  # 70B on 2 GPUs in 407 ms for 5,000 tokens -> 8B on 1
    attn = 4 * 4096 * 32 / (2 * 8.0e9)  # attention FLOPs per context token / linear FLOPs
    kv_s = 2 * 32 * 8 * 128 * 2 / 3.35e12  # K+V bytes per context token / HBM bandwidth
    meta = _cloud_meta(
        "h100-llama8b",
        "NVIDIA H100 (one GPU)",
        "NVIDIA NIM 1.8.0",
        "Llama-3.1-8B",
        row="NVIDIA NIM 1.8.0 (likely one H100, short prompts) | Llama-3.1-8B | inter-token "
        "latency 4.6 ms at concurrency 1 (215 tok/s), 5.2 ms at 25, 7.6 ms at 100, 16.1 ms at 250; "
        "NIM, 2×H100 FP8, 5,000-token prompts | Llama-3.3-70B | TTFT 407 ms",
        source="NIM LLM benchmarking docs",
        assumptions=[
            "decode step s(B) = e0 + e1·B fitted to the four ITL points (concurrency = batch)",
            f"prefill b = 407 ms / 5,000 tokens x 2 GPUs x 8B/70B = {b * 1e6:.2f} us/token "
            "(the 70B FP8 row scaled by parameters; the 8B row gives no prefill figure)",
            f"prefill c = b x {attn:.2e} / 2: attention FLOPs per context token "
            "(4·d_model·layers = 4·4096·32) against 2·params per token",
            f"decode d1 = {kv_s * 1e9:.0f} ns per context token: Llama-3.1-8B K+V bytes "
            "(2·32 layers·8 heads·128·2 B) read at 3.35 TB/s",
        ],
        measured=5000,
        valid=16384,
    )
    return CloudProfile(
        prefill=PrefillCost(a=0.0, b=b, c=b * attn / 2),
        decode=DecodeCost(d0=itl[0], d1=kv_s),
        batch=batch,
        meta=meta,
    )


def ascend_qwen7b() -> CloudProfile:
    """vllm-ascend 0.7.3 on one Ascend NPU, Qwen2.5-VL-7B on ShareGPT: time per output token at
    three request rates; concurrency from Little's law."""
    out_len, ttft = 200, 0.374  # ShareGPT's mean answer in vllm bench serve (assumed)
    concurrency = [r * (ttft + out_len * t) for r, t in ((1, 0.0308), (4, 0.067))]
    batch = fit_batch(concurrency, [0.0308, 0.067])
    b = 1 / 7000  # 15.2 GFLOP/token at ~35% of ~300 TFLOPS fp16
    attn = 4 * 3584 * 28 / (2 * 7.6e9)
    kv_s = 2 * 28 * 4 * 128 * 2 / 1.6e12
    meta = _cloud_meta(
        "ascend-qwen7b",
        "Huawei Ascend NPU (one, 910B class)",
        "vllm-ascend 0.7.3",
        "Qwen2.5-VL-7B (as a 7B text model)",
        row="vllm-ascend 0.7.3, one Ascend NPU, ShareGPT | Qwen2.5-VL-7B | at 1 req/s: TTFT "
        "374 ms, time per output token 30.8 ms; 67 ms at 4 req/s; 158 ms at 16 req/s",
        source="vllm-project/vllm-ascend issue 776",
        assumptions=[
            f"concurrency B = rate x (TTFT + {out_len} x TPOT) (Little's law, ShareGPT's mean "
            f"answer assumed {out_len} tokens): B = {concurrency[0]:.1f} at 1 req/s, "
            f"{concurrency[1]:.1f} at 4 req/s; the 16 req/s point (B > 256, saturated) is left out",
            "decode step s(B) = e0 + e1·B through those two points",
            "prefill b = 1/7,000 s/token: an estimate (7.6B params = 15.2 GFLOP/token at ~35% of "
            "~300 TFLOPS fp16); the row's 374 ms TTFT includes scheduling, so it is not used as "
            "busy time",
            f"prefill c = b x {attn:.2e} / 2 (attention FLOPs, 4·3584·28 per context token)",
            f"decode d1 = {kv_s * 1e9:.0f} ns per context token (Qwen2.5-7B K+V bytes at 1.6 TB/s)",
        ],
        measured=512,
        valid=16384,
    )
    d0 = batch.step_time(1.0)
    return CloudProfile(
        prefill=PrefillCost(a=0.0, b=b, c=b * attn / 2),
        decode=DecodeCost(d0=d0, d1=kv_s),
        batch=BatchCost(e0=batch.e0, e1=batch.e1, rmse_s=batch.rmse_s),
        meta=meta,
    )


def _cloud_meta(name, hardware, engine, model, *, row, source, assumptions, measured, valid):
    return {
        "name": name,
        "source": "derived",
        "target": "cloud",
        "hardware": hardware,
        "engine": engine,
        "model": model,
        "derived_from": {"file": "HARDWARE.md", "row": row, "source": source},
        "assumptions": assumptions,
        "measured_max_prompt_len": measured,
        "valid_max_prompt_len": valid,
    }


def derived_profiles() -> list[DeviceProfile | CloudProfile]:
    return [*(phone_profile(r) for r in PHONES), h100_llama8b(), ascend_qwen7b()]


def write_all(folder: Path) -> list[Path]:
    paths = []
    for profile in derived_profiles():
        path = folder / f"{profile.meta['name']}.json"
        path.write_text(json.dumps(profile_to_dict(profile), indent=2) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_all(Path(__file__).parent):
        print(p)
