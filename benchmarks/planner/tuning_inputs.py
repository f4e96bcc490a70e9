"""Parsing the tuner's inputs: SLO strings, refinement quality files, trace-derived buckets."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks.bench.workloads import load_trace

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


def load_quality(path: str | Path) -> dict[float, float]:
    """Per-ratio quality from ``python -m benchmarks.studies.refine_quality --save-result``.

    Quality is the attention method's first-32-token greedy agreement with the unrefined answer
    (``summary`` rows with ``method == "attention"``); ratio 0 is 1.0 by definition.
    """
    where = f"quality file {path}"
    try:
        data = json.loads(Path(path).read_text())
        rows = {
            float(r["refine_ratio"]): float(r["agreement_32"])
            for r in data["summary"]
            if r["method"] == "attention"
        }
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: not readable JSON ({exc})") from None
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"{where}: expected the refine_quality result (a 'summary' list of rows with "
            "method, refine_ratio and agreement_32)"
        ) from None
    if not rows:
        raise ValueError(f"{where}: no attention rows in 'summary'")
    return {0.0: 1.0, **rows}


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
