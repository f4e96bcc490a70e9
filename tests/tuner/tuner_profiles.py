"""Synthetic profiles with round numbers, so expected settings can be worked out by hand."""

from __future__ import annotations

from common.profiles import BatchCost, CloudProfile, DecodeCost, DeviceProfile, PrefillCost


def slow_device(tau_d: float = 0.25) -> DeviceProfile:
    """~100 tok/s prefill (a phone-class device), τd = 250 ms."""
    return DeviceProfile(PrefillCost(a=0.02, b=0.01), DecodeCost(d0=tau_d), meta={"name": "slow"})


def fast_cloud() -> CloudProfile:
    return CloudProfile(
        PrefillCost(a=0.01, b=0.0005), DecodeCost(d0=0.02), BatchCost(e0=0.015, e1=0.005)
    )
