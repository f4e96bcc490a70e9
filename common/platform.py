"""The hardware seam: the one module that touches ``torch.cuda`` / ``torch_npu``.

``select_platform("auto")`` picks NPU (torch-npu importable and a device present), else CUDA,
else CPU. Everything else asks the returned ``Platform`` for its device and never probes
hardware itself (a test enforces this).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Platform:
    name: str  # "npu" | "cuda" | "cpu"
    device: torch.device

    def synchronize(self) -> None:
        """Wait for queued kernels, so wall-clock timings mean what they say."""
        if self.name == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.name == "npu":
            torch.npu.synchronize(self.device)


def _npu_available() -> bool:
    # torch-npu breaks a plain CPU install on import; only look when it is installed at all.
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        import torch_npu  # noqa: F401

        return bool(torch.npu.is_available())
    except Exception:  # CANN missing or broken: not usable here
        return False


def _cuda_available() -> bool:
    return torch.cuda.is_available()


# Order is preference for "auto".
_PROBES: dict[str, Callable[[], bool]] = {
    "npu": _npu_available,
    "cuda": _cuda_available,
    "cpu": lambda: True,
}


def available_platforms() -> list[str]:
    return [name for name, probe in _PROBES.items() if probe()]


def select_platform(preference: str = "auto") -> Platform:
    """``preference``: "auto", "npu", "cuda", "cpu", or a torch device string like "cuda:1"."""
    pref = preference.lower()
    if pref == "auto":
        name = next(n for n, probe in _PROBES.items() if probe())
        return Platform(name=name, device=torch.device(name))
    kind = pref.split(":")[0]
    if kind not in _PROBES:
        raise ValueError(f"unknown device {preference!r}: use auto, npu, cuda or cpu")
    if not _PROBES[kind]():
        raise ValueError(f"device {preference!r} was asked for but is not available here")
    return Platform(name=kind, device=torch.device(pref))


def set_threads(num_threads: int | None) -> None:
    """Give this process an explicit intra-op thread count (cloud and device share cores)."""
    if num_threads is not None and num_threads > 0:
        torch.set_num_threads(num_threads)
