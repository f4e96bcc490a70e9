"""Split settings: the schema the tuner writes and the device client and ``pdd bench`` read.

One bucket per prompt-length range; the client picks the first bucket whose ``max_prompt_len``
covers the prompt tokens its device must prefill (all of them, or the uncached ones in a session).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import NotRequired, TypedDict

from .messages import MAX_REFINE_RATIO
from .profiles import PrefillCost


class Bucket(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_prompt_len: int = Field(..., gt=0)
    use_cloud: bool = True  # False: the device answers alone (short prompts, fast devices)
    use_device: bool = True  # False: cloud-only, the device never takes over (slow devices)
    cloud_tokens: int = Field(..., ge=0, description="N")
    refine_ratio: float = Field(0.0, ge=0.0, le=MAX_REFINE_RATIO)
    min_interval_s: float = Field(..., ge=0.0, description="speed controller's smallest gap")
    max_interval_s: float = Field(..., gt=0.0, description="speed controller's largest gap")
    reason: str = ""
    # The defaults' bucket: the device client plans N and the pacing per request from its own
    # measured speed, by the tuner's rule (``device_client/self_profile.py``); the fixed values
    # above are used only while it has measured nothing.
    untuned: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> Bucket:
        if self.min_interval_s > self.max_interval_s:
            raise ValueError("min_interval_s must not exceed max_interval_s")
        if not (self.use_cloud or self.use_device):
            raise ValueError("a bucket must use the cloud, the device, or both")
        return self


class Prediction(TypedDict):
    """What the tuner's timing model expects a live run of one bucket to show (``pdd tune``;
    compared with ``pdd bench`` results by ``pdd tuner-check``)."""

    max_prompt_len: int  # the bucket, evaluated at its longest prompt
    handoff_index: int  # m
    ttft_s: float
    max_tpot_s: float
    cloud_busy_s: float  # per request, as planned
    cloud_only_busy_s: float  # the same request answered by the cloud alone (O tokens)
    catch_up_s: NotRequired[float]  # pd buckets: Tcatch, the device's first own token
    display_interval_s: NotRequired[float]  # pd buckets: Δ the speed controller settles on


class SplitSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    buckets: list[Bucket] = Field(..., min_length=1)
    tuner: dict[str, Any] | None = None  # provenance: objective, SLO, network, profiles
    predictions: list[Prediction] = Field(default_factory=list)  # one per bucket (tuned files)
    # False: planned for a cloud engine that cannot score prompts (``pdd serve --engine vllm``),
    # so no bucket may refine (its keep-set would say unavailable and N would be too small).
    cloud_can_score: bool = True

    @model_validator(mode="after")
    def _sorted(self) -> SplitSettings:
        lens = [b.max_prompt_len for b in self.buckets]
        if lens != sorted(lens) or len(set(lens)) != len(lens):
            raise ValueError("buckets must be sorted by strictly increasing max_prompt_len")
        refining = [b for b in self.buckets if b.refine_ratio > 0]
        if refining and not self.cloud_can_score:
            b = refining[0]
            raise ValueError(
                f"bucket max_prompt_len={b.max_prompt_len} has refine_ratio {b.refine_ratio:g} "
                "but cloud_can_score is false (the cloud engine cannot score prompts): set its "
                "refine_ratio to 0, or re-run `pdd tune --cloud-engine vllm`"
            )
        return self

    def bucket_for(
        self, prompt_len: int, num_device_cached: int = 0, prefill: PrefillCost | None = None
    ) -> Bucket:
        """The first bucket that covers the device's prefill work for this prompt; the last one
        for longer prompts. The work is the prompt tokens it must still prefill (``prompt_len``
        less the ``num_device_cached`` its session cache holds), so a short follow-up in a long
        conversation gets a short prompt's plan (maybe device-only) and a long pasted document
        a long one's. Given the device's ``prefill`` cost, the work is counted as the fresh
        prompt length that takes as long (``equivalent_prompt_len``): new tokens after a long
        cached context attend to all of it, so on a phone 200 new tokens after 6k cached ones
        cost as much as a fresh 1k-token prompt, and need that bucket's N. The device client,
        the tuner and the simulator all choose by this one rule."""
        work = max(prompt_len - num_device_cached, 1)
        if prefill is not None and num_device_cached > 0:
            work = equivalent_prompt_len(work, num_device_cached, prefill)
        for bucket in self.buckets:
            if work <= bucket.max_prompt_len:
                return bucket
        return self.buckets[-1]

    @classmethod
    def load(cls, path: str | Path) -> SplitSettings:
        return cls.model_validate(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")


def default_settings() -> SplitSettings:
    """Untuned defaults: the client sizes N and the pacing from its own measured speed
    (``untuned``); N = 64, Δmax 250 ms only until it has measured anything.

    Run ``pdd profile`` + ``pdd tune`` for per-length budgets that fit a given device and cloud
    (the client's own plan assumes nothing of the cloud, so it asks for more cloud tokens).
    """
    return SplitSettings(
        buckets=[
            Bucket(
                max_prompt_len=1 << 20,
                use_cloud=True,
                cloud_tokens=64,
                refine_ratio=0.0,
                min_interval_s=0.0,
                max_interval_s=0.25,
                reason="default: untuned",
                untuned=True,
            )
        ]
    )


def equivalent_prompt_len(num_new: int, num_cached: int, prefill: PrefillCost) -> int:
    """The fresh prompt length L whose prefill takes as long as ``num_new`` tokens after
    ``num_cached`` cached ones: a + bL + cL² = a + b·n + c·((k + n)² - k²), the larger root."""
    n, k = float(num_new), float(num_cached)
    extra = prefill.b * n + prefill.c * ((k + n) ** 2 - k**2)
    if prefill.c <= 0:
        return num_new if prefill.b <= 0 else max(num_new, math.ceil(extra / prefill.b - 1e-9))
    root = (-prefill.b + math.sqrt(prefill.b**2 + 4 * prefill.c * extra)) / (2 * prefill.c)
    return max(num_new, math.ceil(root - 1e-9))
