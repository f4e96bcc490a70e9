"""What the device SDK hands to the app: displayed tokens and a per-answer summary."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

Source = Literal["cloud", "device"]
DEFAULT_MAX_TOKENS = 128  # answer length limit when none is given


class Mode(str, Enum):
    PD = "pd"  # cloud prefill + first tokens, device catches up and finishes
    DEVICE = "device"  # device-only baseline
    CLOUD = "cloud"  # cloud-only baseline: the cloud streams the whole answer


@dataclass(frozen=True)
class DisplayedToken:
    index: int  # position in the answer, 0 = first token
    token_id: int
    text: str  # text piece this token completes (may be "" mid-character)
    source: Source
    time_s: float  # display time, seconds since the request started


@dataclass(frozen=True)
class GenerationResult:
    mode: Mode
    tokens: list[DisplayedToken]
    prompt_tokens: int
    kept_prompt_tokens: int  # what the device actually prefilled (refinement skips the rest)
    handoff_index: int | None  # m: cloud tokens shown before the device took over
    cloud_tokens: int  # tokens the cloud generated for this answer (first included)
    cloud_busy_s: float | None  # the cloud's own accounting, from its end event
    fallback: str | None  # why the device finished alone (the cloud failed), or None
    end_reason: str  # eos | max_tokens | error (the device failed: see device_error)
    first_token_source: Source | None = None  # who produced the first token shown
    # Why the cloud contributed no shown token (None when it did): its failure (= fallback),
    # the device being faster, or device-only mode.
    cloud_unused_reason: str | None = None
    keep_set_note: str | None = None  # why a keep-set was ignored or refused, if one was
    device_error: str | None = None  # why the device runtime failed, if it did
    cached_prompt_tokens: int = 0  # prompt tokens the device's session cache already held
    # Prompt tokens the cloud took from its prefix cache (its end event's usage.cached_tokens);
    # None when no end event came (device-only, or the cloud failed first).
    cloud_cached_tokens: int | None = None

    @property
    def token_ids(self) -> list[int]:
        return [t.token_id for t in self.tokens]

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    @property
    def sources(self) -> list[Source]:
        return [t.source for t in self.tokens]

    @property
    def ttft_s(self) -> float | None:
        return self.tokens[0].time_s if self.tokens else None

    @property
    def e2e_s(self) -> float | None:
        return self.tokens[-1].time_s if self.tokens else None

    @property
    def itl_s(self) -> list[float]:
        """Every gap between two displayed tokens (inter-token latencies)."""
        times = [t.time_s for t in self.tokens]
        return [b - a for a, b in zip(times, times[1:], strict=False)]

    @property
    def tpot_mean_s(self) -> float | None:
        """vLLM's TPOT: (E2E - TTFT) / (n - 1)."""
        n = len(self.tokens)
        return (self.tokens[-1].time_s - self.tokens[0].time_s) / (n - 1) if n > 1 else None

    @property
    def max_tpot_s(self) -> float | None:
        """The largest gap between two displayed tokens, handoff included."""
        return max(self.itl_s) if len(self.tokens) > 1 else None

    def to_json_dict(self) -> dict:
        return {
            "mode": self.mode.value,
            "token_ids": self.token_ids,
            "text": self.text,
            "sources": self.sources,
            "ttft_s": self.ttft_s,
            "tpot_mean_s": self.tpot_mean_s,
            "max_tpot_s": self.max_tpot_s,
            "e2e_s": self.e2e_s,
            "handoff_index": self.handoff_index,
            "cloud_tokens": self.cloud_tokens,
            "cloud_busy_s": self.cloud_busy_s,
            "prompt_tokens": self.prompt_tokens,
            "kept_prompt_tokens": self.kept_prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "cloud_cached_tokens": self.cloud_cached_tokens,
            "fallback": self.fallback,
            "end_reason": self.end_reason,
            "first_token_source": self.first_token_source,
            "cloud_unused_reason": self.cloud_unused_reason,
            "keep_set_note": self.keep_set_note,
            "device_error": self.device_error,
        }
