"""Parsing the tuner's inputs: SLO strings, refinement quality files, trace-derived buckets."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks.workloads import load_trace

RATIO_KEYS = ("refine_ratio", "rho", "ratio")
QUALITY_KEYS = ("agreement", "quality", "token_agreement", "score")
DEFAULT_OUTPUT_LEN = 256


def parse_slo(text: str) -> tuple[float | None, float | None]:
    """``ttft:MS,tpot:MS`` (each optional) -> (ttft_s, tpot_s), None where not given."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition(":")
        if not sep or key not in ("ttft", "tpot"):
            raise ValueError(f"--slo: expected ttft:MS,tpot:MS, got {part!r}")
        try:
            values[key] = float(value) / 1e3
        except ValueError:
            raise ValueError(f"--slo: {key} must be a number of ms, got {value!r}") from None
        if values[key] <= 0:
            raise ValueError(f"--slo: {key} must be > 0 ms")
    return values.get("ttft"), values.get("tpot")


def _pick(row: dict, keys: tuple[str, ...], what: str, where: str) -> float:
    for key in keys:
        if key in row:
            return float(row[key])
    raise ValueError(f"{where}: an entry lacks a {what} field (one of {', '.join(keys)})")


def load_quality(path: str | Path) -> dict[float, float]:
    """Per-ratio quality from the refinement benchmark's JSON.

    Accepts a list of entries, or an object holding one under "results"/"ratios"/"per_ratio",
    or a mapping {"0.25": 0.93}; each entry has a ratio and an agreement field.
    """
    where = f"quality file {path}"
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: not readable JSON ({exc})") from None
    if isinstance(data, dict):
        data = next((data[k] for k in ("results", "ratios", "per_ratio") if k in data), data)
    try:
        if isinstance(data, dict):
            rows = {float(k): float(v) for k, v in data.items()}
        elif isinstance(data, list):
            rows = {
                _pick(r, RATIO_KEYS, "ratio", where): _pick(r, QUALITY_KEYS, "quality", where)
                for r in data
            }
        else:
            raise ValueError(f"{where}: expected a list or object of per-ratio results")
    except (TypeError, AttributeError):
        raise ValueError(f"{where}: entries must be objects with ratio and quality") from None
    if not rows:
        raise ValueError(f"{where}: no per-ratio results")
    return rows


def buckets_from_trace(
    trace: Path | None, input_lens: str, output_len: int | None
) -> tuple[list[int], int]:
    """Bucket lengths and O: from --input-lens, or powers of two covering a trace."""
    if trace is None:
        try:
            lens = sorted({int(x) for x in input_lens.split(",") if x.strip()})
        except ValueError:
            raise ValueError(f"--input-lens must be integers, got {input_lens!r}") from None
        return lens, output_len or DEFAULT_OUTPUT_LEN
    requests = load_trace(trace)
    longest = max(r.input_length for r in requests)
    lens, edge = [], 128
    while True:
        lens.append(edge)
        if edge >= longest:
            break
        edge *= 2
    median_out = int(statistics.median(r.output_length for r in requests))
    return lens, output_len or max(median_out, 2)
