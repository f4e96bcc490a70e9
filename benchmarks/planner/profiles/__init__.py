"""Shipped profiles and example settings, addressable by short name wherever a path is accepted.

Two kinds live here, never mixed up:
- **measured** on this project's machine with ``pdd profile`` (``meta.source == "measured"``, or
  no ``source``: every file ``pdd profile`` writes is a measurement);
- **derived** from a published figure (``meta.source == "derived"``): ``meta.derived_from`` names
  the row of ``HARDWARE.md`` and its source, ``meta.assumptions`` every step that is arithmetic
  rather than the source's figure. ``python -m benchmarks.planner.profiles.derive`` rebuilds them.

Range: ``meta.measured_max_prompt_len`` is the longest prompt behind the prefill figure and
``meta.valid_max_prompt_len`` the longest a caller may use. ``check_prompt_lens`` refuses a
length past the valid one (no quadratic fit extrapolated to minutes) and returns a note for a
length past the measured one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.profiles import CloudProfile, DeviceProfile, ProfileError, load_profile

PROFILE_DIR = Path(__file__).parent
SETTINGS_DIR = PROFILE_DIR / "settings"
EXTRAPOLATION_FACTOR = 2.0  # measured profiles: usable up to 2x their longest measured prompt


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    kind: str  # device | cloud
    source: str  # measured | derived
    summary: str  # one line: hardware, model, where the figure comes from
    path: Path


def _resolve(name_or_path: str | Path, folder: Path, what: str) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.exists() or path.suffix == ".json" or "/" in text:
        return path
    shipped = folder / f"{text}.json"
    if shipped.exists():
        return shipped
    names = ", ".join(sorted(p.stem for p in folder.glob("*.json")))
    raise ProfileError(f"{what} {text!r}: no such file and no shipped one of that name ({names})")


def profile_path(name_or_path: str | Path) -> Path:
    """A file path as given, else the shipped profile of that short name."""
    return _resolve(name_or_path, PROFILE_DIR, "profile")


def settings_path(name_or_path: str | Path) -> Path:
    """A settings file as given, else the shipped example settings of that short name."""
    return _resolve(name_or_path, SETTINGS_DIR, "settings")


def load_named(name_or_path: str | Path, kind: str) -> DeviceProfile | CloudProfile:
    """``load_profile`` that also takes a shipped profile's short name (``pdd profile list``)."""
    return load_profile(profile_path(name_or_path), kind)


def prompt_range(profile: DeviceProfile | CloudProfile) -> tuple[int | None, int | None]:
    """(longest measured prompt, longest usable prompt); None where the file does not say."""
    meta = profile.meta
    measured = meta.get("measured_max_prompt_len")
    if measured is None:
        rows = profile.measurements.get("prefill") or []
        lengths = [int(r["length"]) for r in rows if isinstance(r, dict) and "length" in r]
        measured = max(lengths) if lengths else None
    valid = meta.get("valid_max_prompt_len")
    if valid is None and measured is not None:
        valid = int(EXTRAPOLATION_FACTOR * measured)
    return (int(measured) if measured else None), (int(valid) if valid else None)


def check_prompt_lens(profile: DeviceProfile | CloudProfile, longest: int) -> str:
    """Refuse ``longest`` past the profile's usable range; a note ("" if none) past the measured."""
    measured, valid = prompt_range(profile)
    label = f"{profile.kind} profile {profile.meta.get('name', '?')}"
    if valid is not None and longest > valid:
        raise ProfileError(
            f"{label}: prompts up to {longest} tokens, but it is valid only up to {valid} "
            f"(measured up to {measured}); drop longer prompts (pdd simulate --max-input-len N) or "
            "tune for shorter ones (pdd tune --input-lens)"
        )
    if measured is not None and longest > measured:
        return f"note: {label} measured prompts up to {measured} tokens; {longest} is extrapolated"
    return ""


def _summary(meta: dict) -> str:
    if meta.get("source") == "derived":
        row = meta.get("derived_from", {})
        return f"{meta.get('hardware', '?')}, {meta.get('model', '?')}; {row.get('source', '?')}"
    return f"{meta.get('model', '?')} on {meta.get('machine', '?')}, slowdown {meta.get('slowdown', 1)}"


def shipped_profiles() -> list[ProfileEntry]:
    entries = []
    for path in sorted(PROFILE_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        meta = data.get("meta") or {}
        source = meta.get("source", "measured")
        entries.append(ProfileEntry(path.stem, data.get("kind", "?"), source, _summary(meta), path))
    return entries


def shipped_settings() -> list[Path]:
    return sorted(SETTINGS_DIR.glob("*.json"))
