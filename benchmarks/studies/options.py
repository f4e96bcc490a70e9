"""The studies' options: one dataclass each, every field a command-line option
(``common.cli_options``). Import-light (no torch), so ``pdd --help`` stays fast.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import typer

from common.cli_options import knob
from common.defaults import DEFAULT_MODEL


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    sys.exit(2)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--ratios {text!r}: give ratios like 0.25,0.5,0.75") from None


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--score-layers {text!r}: give layer numbers like 20,23,26,29") from None


@dataclass(frozen=True)
class RefineStudyOptions:
    """``pdd study refine-quality``: refinement quality and device prefill saved."""

    model: str = knob(DEFAULT_MODEL, "model alias or transformers folder")
    ratios: tuple[float, ...] = knob(
        (0.25, 0.5, 0.75), "refine ratios, comma-separated", cli_type=str, parse=_floats
    )
    max_new_tokens: int = knob(40, "answer tokens decoded per run")
    limit: int | None = knob(None, "first N prompts only")
    threads: int = knob(2, "torch threads")
    repeats: int = knob(3, "timing repeats (fastest kept)")
    cloud_speedup: float = knob(10.0, "Tpc = Tpd(L) / this (handoff estimates)")
    device_prefill_tok_s: float = knob(480.0, "nominal device prefill rate (handoff estimates)")
    device_decode_s: float = knob(0.062, "nominal device τd (handoff estimates)")
    rtt_ms: float = knob(50.0, "round trip (handoff estimates)")
    quick: bool = knob(False, "4 prompts, 24 new tokens, 1 repeat")
    save_result: Path | None = knob(None, "write the JSON here")
    window: int | None = knob(None, "W: scoring queries (default: the product's RefineConfig)")
    pool_kernel: int | None = knob(None, "max-pool width, odd (default: the product's)")
    score_layers: tuple[int, ...] | None = knob(
        None, "comma-separated layer indices (default: 4 spread)", cli_type=str, parse=_layers
    )

    def __post_init__(self) -> None:
        if self.pool_kernel is not None and (self.pool_kernel < 1 or self.pool_kernel % 2 == 0):
            raise ValueError("--pool-kernel must be a positive odd number")
        if not self.ratios:
            raise ValueError("--ratios: give at least one ratio")

    def resolved(self) -> RefineStudyOptions:
        if not self.quick:
            return self
        return replace(self, limit=self.limit or 4, max_new_tokens=24, repeats=1)


@dataclass(frozen=True)
class EngineScalingOptions:
    """``pdd study engine-scaling``: batched decode throughput and TTFT under decode load."""

    threads: int = knob(2, "torch threads of the engine")
    num_concurrent: int = knob(8, "requests decoding at once")
    decode_tokens: int = knob(48, "tokens each request decodes")
    num_probes: int = knob(5, "TTFT probes, idle and under load")


@dataclass(frozen=True)
class ChunkedPrefillOptions:
    """``pdd study chunked-prefill``: how long a long prompt's prefill pauses other streams."""

    threads: int = knob(2, "torch threads of the engine")
    prompt_tokens: int = knob(2048, "the long prompt's length")
    num_decoding: int = knob(4, "requests decoding when it arrives")
    chunks: str = knob("0,128,256,512,1024", "chunk sizes; the first is the base")
    refine_ratio: float = knob(
        0.0, "the long prompt's refine ratio (> 0: its attention is scored, chunk by chunk)"
    )


@dataclass(frozen=True)
class SessionsStudyOptions:
    """``pdd study sessions``: a multi-turn conversation with device sessions against without."""

    device_slowdown: float = knob(4.0, "emulate a device K times slower")
    chapters: str = knob("1,2,3", "Jonah chapters, each pasted and then followed up")
    max_tokens: int = knob(24, "answer length per turn")
    cloud_tokens: int = knob(8, "N of the pd bucket")
    max_device_alone: int = knob(64, "device-only up to this many tokens to prefill (0: never)")
    cloud_prefix_cache: bool = knob(
        False, "session turns use a cloud with its prefix cache, fresh turns one without"
    )
    threads: int = knob(1, "device torch threads")
    cloud_threads: int = knob(1, "torch threads of each embedded cloud")
    output: Path | None = knob(None, "save the rows as JSON")


@dataclass(frozen=True)
class DeviceSpeedOptions:
    """``pdd study device-speed``: stalls and cloud cost when devices run off their profiles."""

    num_requests: int = knob(3000, "requests per row")
    sample: int = knob(1000, "pd display loops per run")
    output: Path | None = knob(None, "save the rows as JSON", flag=("-o", "--output"))

    def __post_init__(self) -> None:
        if self.num_requests < 10 or self.sample < 1:
            raise ValueError("--num-requests must be >= 10 and --sample >= 1")


def _engines(text: str) -> tuple[str, ...]:
    engines = tuple(e.strip() for e in text.split(",") if e.strip())
    if not engines or set(engines) - {"builtin", "vllm"} or len(set(engines)) != len(engines):
        raise ValueError(f"--engines {text!r}: give builtin,vllm (or one of them)")
    return engines


def _lens(text: str) -> tuple[int, ...]:
    try:
        lens = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        lens = ()
    if not lens or min(lens) < 4:
        raise ValueError(f"--input-lens {text!r}: give prompt lengths >= 4 like 512,1024,2048")
    return lens


@dataclass(frozen=True)
class VllmPdOptions:
    """``pdd study vllm-pd``: ``pdd bench`` pd/device/cloud on a builtin and a vLLM cloud."""

    input_lens: tuple[int, ...] = knob(
        (512, 1024, 2048), "prompt lengths, comma-separated", cli_type=str, parse=_lens
    )
    output_len: int = knob(128, "answer length")
    num_prompts: int = knob(2, "requests per prompt length")
    device_slowdown: float = knob(4.0, "emulate a device K times slower")
    rtt_ms: float = knob(50.0, "emulated device-cloud round trip")
    threads: int = knob(1, "torch threads of each cloud (one cloud runs at a time)")
    device_threads: int = knob(1, "device torch threads")
    engines: tuple[str, ...] = knob(
        ("builtin", "vllm"), "cloud engines, in order", cli_type=str, parse=_engines
    )
    settings: Path | None = knob(None, "split settings for both clouds (default: tune each)")
    output_dir: Path | None = knob(
        None, "profiles, settings and bench results (default: a temp dir)"
    )

    def __post_init__(self) -> None:
        if self.output_len < 2 or self.num_prompts < 1:
            raise ValueError("--output-len must be >= 2 and --num-prompts >= 1")
