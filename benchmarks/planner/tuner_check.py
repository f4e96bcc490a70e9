"""Tuner predictions against live ``pdd bench`` runs, and tuned settings against fixed budgets.

    pdd tuner-check --settings settings.json --tuned tuned.json \
        [--fixed N16=fixed16.json --fixed N64=fixed64.json]

``--tuned`` is a ``pdd bench --save-result`` run made with ``--settings settings.json``. For each
prompt length it prints the tuner's predicted handoff index, TTFT and cloud busy seconds beside
the measured pd medians (issue 5's 20% check). With ``--fixed`` it adds, per length, each run's
median TTFT, stall rate (share of pd answers whose largest gap is a stall,
``common.timing_model.is_stall``) and median cloud busy seconds, so tuned and fixed budgets
compare on one table.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from common.settings import Prediction, SplitSettings
from common.timing_model import is_stall

PD_MODES = ("pd",)


def _pd_requests(result: dict) -> dict[int, list[dict]]:
    by_len: dict[int, list[dict]] = {}
    for r in result["requests"]:
        if r["mode"] in PD_MODES and not r.get("error"):
            by_len.setdefault(r["input_len"], []).append(r)
    return by_len


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def measured(result: dict, settings: SplitSettings) -> dict[int, dict]:
    """Per prompt length: median handoff index, TTFT, cloud busy s and the stall rate."""
    out = {}
    for length, reqs in sorted(_pd_requests(result).items()):
        max_interval_s = settings.bucket_for(length).max_interval_s
        stalls = [is_stall(_seconds(r["max_tpot_ms"]), max_interval_s) for r in reqs]
        out[length] = {
            "handoff_index": _median(
                [
                    r["handoff_index"] if r["handoff_index"] is not None else r["num_tokens"]
                    for r in reqs
                ]
            ),
            "ttft_s": _median([r["ttft_ms"] / 1e3 for r in reqs]),
            "cloud_busy_s": _median([r["cloud_busy_s"] for r in reqs]),
            "stall_rate": sum(stalls) / len(stalls),
            "max_tpot_s": _median([r["max_tpot_ms"] / 1e3 for r in reqs if r["max_tpot_ms"]]),
        }
    return out


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1e3


def predicted(settings: SplitSettings) -> dict[int, Prediction]:
    return {p["max_prompt_len"]: p for p in settings.predictions}


def _err(pred: float | None, meas: float | None) -> str:
    if pred is None or meas is None or meas == 0:
        return "-"
    rel = (pred - meas) / meas
    colour = "green" if abs(rel) <= 0.2 else "red"
    return f"[{colour}]{100 * rel:+.0f}%[/{colour}]"


def prediction_table(settings: SplitSettings, live: dict[int, dict]) -> Table:
    preds = predicted(settings)
    table = Table(title="Tuner prediction vs measured pd median (within 20% = green)")
    for col in (
        "prompt",
        "m pred/meas",
        "err",
        "TTFT s pred/meas",
        "err",
        "busy s pred/meas",
        "err",
    ):
        table.add_column(col, justify="right")
    for length, meas in live.items():
        pred = preds.get(settings.bucket_for(length).max_prompt_len, {})
        row = [str(length)]
        for key in ("handoff_index", "ttft_s", "cloud_busy_s"):
            p, m = pred.get(key), meas[key]
            row += [f"{p:.2f} / {m:.2f}" if p is not None and m is not None else "-", _err(p, m)]
        table.add_row(*row)
    return table


def comparison_table(runs: dict[str, dict[int, dict]]) -> Table:
    table = Table(title="Tuned vs fixed budgets (pd medians per prompt length)")
    table.add_column("prompt", justify="right")
    for name in runs:
        table.add_column(f"{name}: TTFT s / stalls / max gap s / busy s", justify="right")
    lengths = sorted({length for run in runs.values() for length in run})
    for length in lengths:
        cells = []
        for run in runs.values():
            m = run.get(length)
            cells.append(
                "-"
                if m is None
                else f"{m['ttft_s']:.2f} / {100 * m['stall_rate']:.0f}% / {m['max_tpot_s']:.2f} / "
                f"{m['cloud_busy_s']:.2f}"
            )
        table.add_row(str(length), *cells)
    return table


def tuner_check_command(
    settings: Path = typer.Option(..., help="the tuner's settings JSON (with predictions)"),
    tuned: Path = typer.Option(..., help="pdd bench result run with --settings SETTINGS"),
    fixed: list[str] = typer.Option([], help="NAME=RESULT.json of a run with fixed settings"),
) -> None:
    """Tuner predictions against live `pdd bench` runs; tuned settings against fixed budgets."""
    console = Console(width=140)
    try:
        split = SplitSettings.load(settings)
        runs = {"tuned": measured(json.loads(tuned.read_text()), split)}
        for spec in fixed:
            name, _, path = spec.partition("=")
            runs[name] = measured(json.loads(Path(path).read_text()), split)
    except (OSError, ValueError, KeyError) as err:  # a pydantic ValidationError is a ValueError
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(prediction_table(split, runs["tuned"]))
    if len(runs) > 1:
        console.print(comparison_table(runs))


if __name__ == "__main__":  # python -m benchmarks.planner.tuner_check: the same as pdd tuner-check
    typer.run(tuner_check_command)
