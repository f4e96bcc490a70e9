"""Console tables (vLLM ``bench serve`` style), the issue-3 target checks and the result JSON."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .metrics import cloud_throughput_gain, summarize

_SECTIONS = [
    ("Time to First Token", "ttft", "TTFT"),
    ("Time per Output Token (excl. 1st token)", "tpot", "TPOT"),
    ("Inter-token Latency", "itl", "ITL"),
    ("Max TPOT (largest gap per request)", "max_tpot", "max TPOT"),
    ("End-to-end Latency", "e2el", "E2EL"),
]


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summaries(records, slos_ms: dict[str, float]) -> tuple[dict, dict]:
    """(per mode, per input length then mode) summaries of the records."""
    labels = list(dict.fromkeys(r.mode for r in records))
    modes = {m: summarize([r for r in records if r.mode == m], slos_ms) for m in labels}
    by_len: dict[str, dict] = {}
    for length in sorted({r.input_len for r in records}):
        rows = [r for r in records if r.input_len == length]
        by_len[str(length)] = {
            m: summarize([r for r in rows if r.mode == m], slos_ms) for m in labels
        }
    return modes, by_len


def _bucket_text(bucket: dict) -> str:
    lo, hi = 1000 * bucket["min_interval_s"], 1000 * bucket["max_interval_s"]
    if not bucket.get("use_cloud", True):
        what = "device-only"
    elif not bucket.get("use_device", True):
        what = "cloud-only"
    else:
        what = f"N={bucket['cloud_tokens']} ρ={bucket['refine_ratio']:g}"
    return f"L<={bucket['max_prompt_len']}: {what}, Δ {lo:.0f}-{hi:.0f} ms"


def profile_rows(profiles: dict) -> list[tuple[str, str]]:
    """One readable line per group of ``profiles`` (the JSON keeps every field)."""
    dev, cloud, net = profiles["device"], profiles["cloud"], profiles["network"]
    rows = [
        (
            "device",
            f"{dev['emulation']} emulation ({dev['slowdown']:g}x this machine), "
            f"{dev['model']}, {dev['threads']} thread(s)",
        ),
        (
            "cloud",
            f"{cloud['url'] or '(not used)'}"
            + (" embedded" if cloud["embedded"] else "")
            + f", {cloud['transport']}, threads {cloud['threads']}",
        ),
        (
            "network",
            f"RTT {net['rtt_ms']:g} ms, jitter {net['jitter_ms']:g} ms, bandwidth "
            + (f"{net['bandwidth_mbps']:g} Mbit/s" if net["bandwidth_mbps"] else "unlimited"),
        ),
    ]
    split = profiles["split"]
    buckets = split["settings"]["buckets"]
    text = "; ".join(_bucket_text(b) for b in buckets)
    if split["cloud_tokens"] is not None:
        text = f"N={split['cloud_tokens']} for every prompt (--cloud-tokens); pacing: {text}"
    reason = buckets[0].get("reason", "")
    rows.append(("split", text + (f" ({reason})" if len(buckets) == 1 and reason else "")))
    h = profiles["host"]
    rows.append(
        (
            "host",
            f"{h['machine']}, {h['cpu_count']} CPUs, load {h['load_avg_at_start'][0]}, "
            f"Python {h['python']}, torch {h['torch']}",
        )
    )
    return rows


def print_profiles(console: Console, profiles: dict) -> None:
    table = Table(title="Profiles", show_header=False, title_justify="left")
    for group, text in profile_rows(profiles):
        table.add_row(f"[bold]{group}[/bold]", text)
    console.print(table)


def print_mode(console: Console, label: str, s: dict) -> None:
    """One vLLM-style block: ``Median TTFT (ms):  123.45``."""
    table = Table(title=f"{label}", show_header=False, title_justify="left", min_width=56)
    table.add_column(min_width=40)
    table.add_column(justify="right")
    table.add_row("Successful requests:", _fmt(s["completed"]))
    table.add_row("Failed requests:", _fmt(s["failed"]))
    table.add_row("Mode duration (s):", _fmt(s["duration_s"]))
    table.add_row("Request throughput (req/s):", _fmt(s["request_throughput"]))
    if "request_goodput" in s:
        table.add_row("Request goodput (req/s):", _fmt(s["request_goodput"]))
    table.add_row("Output token throughput (tok/s):", _fmt(s["output_throughput"]))
    for title, key, name in _SECTIONS:
        table.add_row(f"[dim]---- {title} ----[/dim]", "")
        for stat, word in (("mean", "Mean"), ("median", "Median"), ("p90", "P90"), ("p99", "P99")):
            table.add_row(f"{word} {name} (ms):", _fmt(s[f"{stat}_{key}_ms"]))
        table.add_row(f"Max {name} (ms):", _fmt(s[f"max_{key}_ms"]))
    table.add_row("[dim]---- Cloud cost ----[/dim]", "")
    table.add_row("Mean output tokens:", _fmt(s["mean_output_tokens"], 1))
    table.add_row("Mean cloud tokens:", _fmt(s["mean_cloud_tokens"], 1))
    table.add_row("Mean handoff index:", _fmt(s["mean_handoff_index"], 1))
    table.add_row("Mean cloud busy per request (s):", _fmt(s["mean_cloud_busy_s"], 3))
    table.add_row("Cloud throughput (req/busy-s):", _fmt(s["cloud_throughput"]))
    table.add_row("Fallbacks:", _fmt(s["num_fallbacks"]))
    table.add_row("Answers identical to device-only:", _fmt(s["num_matching_device"]))
    console.print(table)


def check_targets(by_len: dict, prefill_alone_s: dict[int, float], rtt_ms: float) -> list[dict]:
    """Issue 3's targets per input length (None where a mode needed for one did not run)."""
    rows = []
    for length, modes in by_len.items():
        dev, pd, cloud = modes.get("device"), modes.get("pd"), modes.get("cloud")
        row: dict = {"input_len": int(length)}
        if dev and pd and dev["median_ttft_ms"] and pd["median_ttft_ms"] is not None:
            row["ttft_reduction"] = 1.0 - pd["median_ttft_ms"] / dev["median_ttft_ms"]
            row["ttft_reduction_ok"] = row["ttft_reduction"] >= 0.60
        alone = prefill_alone_s.get(int(length))
        if pd and alone is not None and pd["median_ttft_ms"] is not None:
            row["ttft_floor_ms"] = rtt_ms + 1000.0 * alone
            row["ttft_over_floor"] = pd["median_ttft_ms"] / row["ttft_floor_ms"]
            row["ttft_over_floor_ok"] = row["ttft_over_floor"] <= 1.15
        if dev and pd and dev["median_tpot_ms"] and pd["p99_max_tpot_ms"] is not None:
            row["max_tpot_over_device_tpot"] = pd["p99_max_tpot_ms"] / dev["median_tpot_ms"]
            row["max_tpot_ok"] = row["max_tpot_over_device_tpot"] <= 1.5
        if cloud and pd and pd["mean_cloud_busy_s"] and cloud["mean_cloud_busy_s"]:
            row["cloud_busy_ratio"] = cloud["mean_cloud_busy_s"] / pd["mean_cloud_busy_s"]
            row["cloud_busy_ok"] = row["cloud_busy_ratio"] >= 3.0
        rows.append(row)
    return rows


def print_targets(console: Console, rows: list[dict]) -> None:
    table = Table(title="Issue 3 targets (pd against the baselines, by prompt length)")
    for col in ("L", "TTFT cut (>=60%)", "TTFT/floor (<=1.15)", "p99 gap/τd (<=1.5)",
                "busy cloud/pd (>=3)"):  # fmt: skip
        table.add_column(col, justify="right")

    def cell(row: dict, key: str, ok: str, pct: bool = False) -> str:
        if key not in row:
            return "-"
        text = f"{100 * row[key]:.0f}%" if pct else f"{row[key]:.2f}"
        return f"[green]{text}[/green]" if row[ok] else f"[red]{text}[/red]"

    for row in rows:
        table.add_row(
            str(row["input_len"]),
            cell(row, "ttft_reduction", "ttft_reduction_ok", pct=True),
            cell(row, "ttft_over_floor", "ttft_over_floor_ok"),
            cell(row, "max_tpot_over_device_tpot", "max_tpot_ok"),
            cell(row, "cloud_busy_ratio", "cloud_busy_ok"),
        )
    console.print(table)


def build_result(records, slos_ms, prefill_alone_s, profiles, config: dict) -> dict:
    modes, by_len = summaries(records, slos_ms)
    gain = None
    if "pd" in modes and "cloud" in modes:
        gain = cloud_throughput_gain(modes["pd"], modes["cloud"])
    return {
        "config": config,
        "profiles": profiles,
        "goodput_slos_ms": slos_ms,
        "modes": modes,
        "by_input_len": by_len,
        "cloud_throughput_gain": gain,
        "cloud_prefill_alone_ms": {str(k): 1000.0 * v for k, v in prefill_alone_s.items()},
        "targets": check_targets(by_len, prefill_alone_s, profiles["network"]["rtt_ms"]),
        "requests": [r.to_json() for r in records],
    }


def print_result(console: Console, result: dict) -> None:
    for label, summary in result["modes"].items():
        print_mode(console, label, summary)
    if result["cloud_throughput_gain"] is not None:
        console.print(
            f"Cloud throughput gain (pd / cloud-only): {result['cloud_throughput_gain']:.2f}x"
        )
    print_targets(console, result["targets"])


def save_result(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
