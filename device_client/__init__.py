"""The device SDK of pd-device: its public surface is two names.

    from device_client import DeviceClient, SamplingParams

    client = DeviceClient("http://127.0.0.1:8000")  # or "grpc://...", or None (device only)
    print(client.generate("Why is the sky blue?", sampling=SamplingParams(seed=1)).text)

Importing the package is cheap: ``DeviceClient`` (torch, transformers) loads on first use, so
``device_client.config`` and the CLI stay fast. Everything else lives in its module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.messages import SamplingParams

    from .client import DeviceClient

__all__ = ["DeviceClient", "SamplingParams"]


def __getattr__(name: str) -> Any:
    if name == "DeviceClient":
        from .client import DeviceClient

        return DeviceClient
    if name == "SamplingParams":
        from common.messages import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'device_client' has no attribute {name!r}")
