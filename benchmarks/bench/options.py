"""``pdd bench`` options: one frozen dataclass whose fields are the command-line options
(``common.cli_options.knob``: default + help), validated, and saved with every result."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common.cli_options import knob
from common.defaults import DEFAULT_MODEL
from common.settings import SplitSettings, default_settings
from device_client.config import (
    DEFAULT_EMULATION,
    EMULATIONS,
    DeviceEmulation,
    NetworkEmulation,
    device_emulation,
)

QUICK = {"input_lens": [64, 256], "output_len": 32, "num_prompts": 1}
FULL = {"input_lens": [128, 512, 1024, 2048], "output_len": 128, "num_prompts": 4}


def _int_list(text: str, what: str = "--input-lens") -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{what} must be integers >= 1, got {text!r}")
    return values


@dataclass(frozen=True)
class BenchOptions:
    """Everything one ``pdd bench`` run needs: each field is its command-line option too
    (``common.cli_options``), validated, and saved with the result."""

    modes: str = knob("device,cloud,pd", "comma list of device, cloud, pd, pd+refine")
    cloud: str | None = knob(None, "a running cloud (http://... or grpc://...); default: embedded")
    cloud_threads: int = knob(1, "torch threads of the embedded cloud")
    cloud_prefix_cache_mb: int = knob(
        0,
        "prefix cache of the embedded cloud (MiB); 0: off, so that modes replaying the same "
        "prompts do not reuse each other's prefill",
    )
    transport: str | None = knob(None, "http | grpc (default: from the URL scheme)")
    model: str = knob(DEFAULT_MODEL, "model alias or transformers folder")
    input_lens: list[int] | None = knob(
        None, "synthetic prompt lengths, e.g. 128,512,1024,2048", cli_type=str, parse=_int_list
    )
    output_len: int | None = knob(None, "answer length (max_tokens)")
    num_prompts: int | None = knob(None, "synthetic requests per input length")
    trace: Path | None = knob(None, "Mooncake JSONL trace to replay instead")
    request_rate: float = knob(math.inf, "requests/s (Poisson); inf: all at once")
    burstiness: float = knob(1.0, "gamma shape of the gaps (1 = Poisson)")
    max_concurrency: int = knob(1, "requests in flight at once, all modes together")
    emulate: str = knob(
        DEFAULT_EMULATION, f"device emulation: {' | '.join(EMULATIONS)} (printed first, saved)"
    )
    device_slowdown: float | None = knob(
        None, "emulate a device K times slower instead (1 = this machine's real speed)"
    )
    device_threads: int = knob(1, "torch threads of the device")
    rtt_ms: float = knob(0.0, "emulated device-cloud round trip")
    jitter_ms: float = knob(0.0, "one-way delay varies by +-jitter/2")
    bandwidth_mbps: float = knob(0.0, "link bandwidth, 0 = unlimited")
    cloud_tokens: int | None = knob(None, "N for pd (default: from the settings)")
    settings_path: Path | None = knob(
        None, "split settings JSON (the `pdd tune` schema)", flag="--settings"
    )
    min_interval_ms: float | None = knob(None, "override the settings' Δmin (and τ̂d)")
    max_interval_ms: float | None = knob(None, "override the settings' Δmax (pacing)")
    refine_ratio: float = knob(0.0, "> 0 adds the pd+refine mode with this ρ")
    temperature: float = knob(0.0, "0 = greedy (the default)")
    seed: int = knob(0, "prompts, arrivals, jitter and sampling seed")
    goodput: list[str] | None = knob(None, "SLOs, e.g. --goodput ttft:2000 --goodput tpot:300")
    save_result: Path | None = knob(None, "write the result JSON here")
    plots: Path | None = knob(None, "write PNG plots into this folder")
    quick: bool = knob(False, "small preset: 64/256-token prompts, 32-token answers")
    virtual_devices: int = knob(0, "cloud load mode: M model-free virtual devices")
    device_prefill_tok_s: float | None = knob(None, "virtual devices' prefill rate")
    device_profile: Path | None = knob(None, "device profile JSON (`pdd profile device`)")

    def __post_init__(self) -> None:
        checks = [
            (self.output_len is None or self.output_len >= 1, "--output-len must be >= 1"),
            (self.num_prompts is None or self.num_prompts >= 1, "--num-prompts must be >= 1"),
            (self.max_concurrency >= 1, "--max-concurrency must be >= 1"),
            (self.request_rate > 0 and self.burstiness > 0, "--request-rate, --burstiness must be > 0"),
            (self.virtual_devices >= 0, "--virtual-devices must be >= 0"),
            (self.cloud_prefix_cache_mb >= 0, "--cloud-prefix-cache-mb must be >= 0"),
            (self.cloud_tokens is None or self.cloud_tokens >= 0, "--cloud-tokens must be >= 0"),
            (self.transport in (None, "http", "grpc"), "--transport must be http or grpc"),
            (self.max_interval_ms is None or self.max_interval_ms > 0, "--max-interval-ms must be > 0"),
            (self.min_interval_ms is None or self.min_interval_ms >= 0, "--min-interval-ms must be >= 0"),
        ]  # fmt: skip
        for is_ok, message in checks:
            if not is_ok:
                raise ValueError(message)
        self.emulation  # noqa: B018 (validates --emulate / --device-slowdown)

    @property
    def emulation(self) -> DeviceEmulation:
        return device_emulation(self.emulate, self.device_slowdown)

    @property
    def network(self) -> NetworkEmulation:
        return NetworkEmulation(self.rtt_ms, self.jitter_ms, self.bandwidth_mbps, self.seed)

    def resolved(self) -> BenchOptions:
        """The preset (``--quick`` or the full one) filled in where an option was not given."""
        preset = QUICK if self.quick else FULL
        return replace(
            self,
            input_lens=self.input_lens or preset["input_lens"],
            output_len=self.output_len or preset["output_len"],
            num_prompts=self.num_prompts or preset["num_prompts"],
            emulate=self.emulation.name,
            device_slowdown=self.emulation.slowdown,
            goodput=list(self.goodput or []),
        )

    def settings(self) -> SplitSettings:
        """The settings file (or defaults) with the pacing overrides applied to every bucket."""
        settings = (
            SplitSettings.load(self.settings_path) if self.settings_path else default_settings()
        )
        buckets = []
        for b in settings.buckets:
            hi = b.max_interval_s if self.max_interval_ms is None else self.max_interval_ms / 1000
            lo = b.min_interval_s if self.min_interval_ms is None else self.min_interval_ms / 1000
            buckets.append(
                b.model_copy(
                    update={
                        "max_interval_s": hi,
                        "min_interval_s": min(lo, hi),
                        # a pacing override is honoured as given, not re-planned by the client
                        "untuned": b.untuned
                        and self.max_interval_ms is None
                        and self.min_interval_ms is None,
                    }
                )
            )
        return settings.model_copy(update={"buckets": buckets})

    def to_json(self) -> dict:
        out = asdict(self)
        out["device_emulation"] = self.emulation.to_json()
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}
