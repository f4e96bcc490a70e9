"""The planning commands' options: ``pdd profile device|cloud``, ``pdd tune``, ``pdd simulate``.

One frozen dataclass per command; each field declared with ``knob(default, help)`` is one
command-line option (``common.cli_options``), so a new option costs one field here. The command
receives the dataclass, validated, and saves it with what it writes (``config_json``).
Import-light (no numpy, no torch), so ``pdd --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import typer

from cloud_server.config import EngineConfig
from common.cli_options import knob
from common.defaults import DEFAULT_MODEL

FULL_LENGTHS = (32, 128, 256, 512, 1024)
QUICK_LENGTHS = (16, 64, 128, 256)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _lengths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--lengths must be integers, got {text!r}") from None


def _check(checks: list[tuple[bool, str]]) -> None:
    for is_ok, message in checks:
        if not is_ok:
            raise ValueError(message)


@dataclass(frozen=True)
class ProfileOptions:
    """``pdd profile device`` and ``pdd profile cloud``: what to measure and where to save it."""

    output: Path = knob(help="profile JSON to write", flag=("-o", "--output"))
    model: str = knob(DEFAULT_MODEL, "model alias or transformers folder")
    threads: int = knob(1, "torch intra-op threads (cores are shared)")
    device_slowdown: float = knob(1.0, "multiply measured times by K (>= 1)")
    lengths: tuple[int, ...] = knob(
        (), "comma-separated prompt lengths, tokens (default: 32..1024; --quick: 16..256)",
        cli_type=str, parse=_lengths,
    )  # fmt: skip
    repeats: int = knob(3, "runs per prompt length")
    name: str | None = knob(None, "profile name (default: TARGET-xK)")
    quick: bool = knob(False, "few short lengths, 2 repeats")

    def __post_init__(self) -> None:
        _check([
            (self.device_slowdown > 0, "--device-slowdown must be > 0"),
            (self.repeats >= 1, "--repeats must be >= 1"),
            (not self.lengths or (len(self.lengths) >= 2 and min(self.lengths) >= 1),
             "--lengths needs at least two positive lengths"),
        ])  # fmt: skip

    @property
    def chosen_lengths(self) -> list[int]:
        return sorted(self.lengths or (QUICK_LENGTHS if self.quick else FULL_LENGTHS))

    @property
    def chosen_repeats(self) -> int:
        return 2 if self.quick else self.repeats


@dataclass(frozen=True)
class TuneOptions:
    """``pdd tune``: the profiles, the link, the workload's lengths and the SLO to plan for."""

    device_profile: str = knob(help="device profile JSON, or a `pdd profile list` name")
    cloud_profile: str = knob(help="cloud profile JSON, or a `pdd profile list` name")
    output: Path = knob(help="settings JSON to write", flag=("-o", "--output"))
    rtt_ms: float = knob(50.0, "device-cloud round trip, ms")
    jitter_ms: float = knob(0.0, "extra one-way delay, up to, ms")
    input_lens: str = knob("128,256,512,1024,2048", "bucket prompt lengths, tokens")
    trace: str | None = knob(None, "Mooncake JSONL trace (or mooncake-5min): its lengths")
    output_len: int | None = knob(None, "answer length O (default 256, or trace median)")
    slo: str = knob("", "ttft:MS,tpot:MS (each optional)")
    quality_floor: float | None = knob(None, "least refinement agreement allowed")
    quality_file: Path | None = knob(None, "refine_quality.json (per-ratio agreement)")
    cloud_engine: str | None = knob(
        None, "builtin | vllm: vllm cannot score prompts, so rho=0 (default: the cloud profile's)"
    )
    cloud_slots: int = knob(
        EngineConfig.max_concurrent_requests, "K: the cloud's slots (`pdd serve --max-concurrent`)"
    )
    device_error: float | None = knob(
        None,
        "devices may run up to this fraction slower than their profile (0.1: 10%); the tuner "
        "pads their prefill by it (default: the profile's fit error; always at least 5%)",
    )


@dataclass(frozen=True)
class SimulateOptions:
    """``pdd simulate``: the fleet (device classes, one cloud), the workload and the SLO."""

    device_profiles: str = knob(
        "cpu-device-x4", "comma-separated device profiles (files or `pdd profile list` names)"
    )
    cloud_profile: str = knob("cpu-cloud", "cloud profile (file or `pdd profile list` name)")
    settings: str | None = knob(None, "settings JSON or shipped name (default: tune here)")
    cloud_slots: int = knob(8, "K: requests the cloud runs at once")
    prefill_chunk_tokens: int | None = knob(
        None,
        "the engine's chunked prefill, as `pdd serve` (0: whole prompts; default: the tuner's "
        f"recommendation in the settings, else {EngineConfig.prefill_chunk_tokens})",
    )
    trace: str | None = knob(None, "Mooncake JSONL trace or shipped name (mooncake-5min)")
    request_rate: float | None = knob(None, "Poisson rate, or the trace rescaled to it, req/s")
    rates: str = knob("", "also: SLO attainment and goodput at these rates, req/s")
    closed_loop_devices: str = knob(
        "",
        "also: M devices in a closed loop (each sends its next request when its last answer's "
        "End reaches it, as `pdd bench --virtual-devices M`), comma-separated Ms",
    )
    input_lens: str = knob("256,512,1024", "prompt lengths drawn uniformly (Poisson), tokens")
    output_len: int | None = knob(None, "answer length O (default: the trace's, else 256)")
    max_input_len: int | None = knob(None, "drop trace requests with longer prompts")
    prefix_cache: bool = knob(
        False, "trace: leading blocks (hash_ids) an earlier request sent are in the cloud's cache"
    )
    sessions: bool = knob(
        False, "trace: a conversation's next turn finds its previous turn in the device's cache"
    )
    num_requests: int | None = knob(None, "default 100,000 (a trace: its length); >= 10")
    rtt_ms: float = knob(50.0, "device-cloud round trip, ms")
    jitter_ms: float = knob(0.0, "extra one-way delay, up to, ms")
    slo: str = knob("", "ttft:MS,tpot:MS (default: see docs/tuner.md)")
    percentile: float = knob(90.0, "SLO attainment required, percent")
    search_requests: int = knob(20_000, "requests per probe of the rate search")
    search_sample: int = knob(2_000, "pd display loops per probe")
    display_sample: int = knob(
        20_000, "pd display loops over the whole workload (0: every request)"
    )
    device_error: float | None = knob(
        None,
        "devices may run up to this fraction slower than their profile (0.1: 10%); tuning here "
        "pads their prefill by it (default: the profile's fit error; always at least 5%)",
    )
    device_speed_sigma: float = knob(
        0.0,
        "simulated devices off their profiles: each request's device takes f x the profile's "
        "time, f lognormal with median 1 and this sigma (0.1: about 1 in 6 is 10% slower)",
    )
    output: Path | None = knob(None, "write the report JSON", flag=("-o", "--output"))

    def __post_init__(self) -> None:
        _check([
            (self.cloud_slots >= 1, "--cloud-slots must be >= 1"),
            (self.prefill_chunk_tokens is None or self.prefill_chunk_tokens >= 0,
             "--prefill-chunk-tokens must be >= 0"),
            (self.num_requests is None or self.num_requests >= 10, "--num-requests must be >= 10"),
            (self.display_sample >= 0, "--display-sample must be >= 0"),
            (0 <= self.device_speed_sigma <= 1, "--device-speed-sigma must be in [0, 1]"),
        ])  # fmt: skip
