"""Settings shared by the session tests."""

from __future__ import annotations

from common.settings import Bucket, SplitSettings


def fast_pacing(*buckets: Bucket) -> SplitSettings:
    """Fast pacing so tests spend their time in the model; ``buckets`` go before the default."""
    default = Bucket(
        max_prompt_len=1 << 20, cloud_tokens=64, min_interval_s=0.0, max_interval_s=0.05
    )
    return SplitSettings(buckets=[*buckets, default])
