"""``--plots DIR``: TTFT CDF per mode, TTFT against prompt length, token timelines (PNG, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import RequestRecord  # noqa: E402

_MODE_COLOURS = {
    "device": "tab:green",
    "cloud": "tab:blue",
    "pd": "tab:red",
    "pd+refine": "tab:purple",
}
_SOURCE_COLOURS = {"cloud": "tab:blue", "device": "tab:green"}


def write_plots(records: list[RequestRecord], out_dir: Path, max_timelines: int = 4) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in records if r.is_ok]
    paths = [
        _ttft_cdf(ok, out_dir / "ttft_cdf.png"),
        _ttft_vs_len(ok, out_dir / "ttft_vs_prompt_len.png"),
        _timeline(ok, out_dir / "token_timeline.png", max_timelines),
    ]
    return paths


def _modes(records: list[RequestRecord]) -> list[str]:
    return list(dict.fromkeys(r.mode for r in records))


def _ttft_cdf(records: list[RequestRecord], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode in _modes(records):
        ttfts = sorted(1000 * r.ttft_s for r in records if r.mode == mode)
        fractions = [(i + 1) / len(ttfts) for i in range(len(ttfts))]
        ax.step(ttfts, fractions, where="post", label=mode, color=_MODE_COLOURS.get(mode))
    ax.set_ylim(0, 1.02)
    return _save(fig, ax, path, "TTFT (ms)", "fraction of requests", "TTFT CDF per mode")


def _ttft_vs_len(records: list[RequestRecord], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode in _modes(records):
        rows = [r for r in records if r.mode == mode]
        colour = _MODE_COLOURS.get(mode)
        ax.scatter(
            [r.input_len for r in rows],
            [1000 * r.ttft_s for r in rows],
            color=colour,
            s=14,
            alpha=0.5,
        )
        lens = sorted({r.input_len for r in rows})
        medians = [_median([1000 * r.ttft_s for r in rows if r.input_len == n]) for n in lens]
        ax.plot(lens, medians, marker="o", label=f"{mode} (median)", color=colour)
    return _save(fig, ax, path, "prompt length (tokens)", "TTFT (ms)", "TTFT against prompt length")


def _save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _samples(records: list[RequestRecord], max_requests: int) -> list[RequestRecord]:
    """Per sampled request (one per prompt length, longest first), its rows in every mode."""
    pd_rows = [r for r in records if r.mode.startswith("pd")]
    picked: dict[int, int] = {}
    for r in sorted(pd_rows or records, key=lambda r: -r.input_len):
        picked.setdefault(r.input_len, r.index)
    indices = list(picked.values())[:max_requests]
    return [r for i in indices for r in records if r.index == i]


def _timeline(records: list[RequestRecord], path: Path, max_requests: int) -> Path:
    rows = _samples(records, max_requests)
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.6))
    for y, r in enumerate(rows):
        for source, colour in _SOURCE_COLOURS.items():
            xs = [t for t, s in zip(r.times_s, r.sources, strict=False) if s == source]
            ax.scatter(xs, [y] * len(xs), s=9, color=colour, marker="|", linewidths=1.2)
        if r.handoff_index is not None and r.handoff_index < r.num_tokens:
            x = r.times_s[r.handoff_index]
            ax.plot([x, x], [y - 0.35, y + 0.35], color="black", linewidth=2)
    ax.set_yticks(range(len(rows)), [f"#{r.index} {r.mode} L={r.input_len}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("display time since the request started (s)")
    handles = [
        plt.Line2D([], [], color=c, marker="|", linestyle="", markersize=10)
        for c in _SOURCE_COLOURS.values()
    ]
    handles.append(plt.Line2D([], [], color="black", linewidth=2))
    ax.legend(
        handles,
        ["cloud token", "device token", "handoff (first device token)"],
        loc="lower right",
        fontsize=8,
    )
    ax.set_title("Token timeline of sample requests")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
