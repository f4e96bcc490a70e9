"""Workloads for the fleet simulator: Poisson arrivals, or a Mooncake trace replayed as it is.

A trace keeps its real timestamps (bursty), input and output lengths and prefix-block hashes;
``scaled`` compresses or stretches its timeline to another mean rate without changing its shape.
A shipped trace can be named by its short name (``mooncake-5min``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.bench.workloads import load_trace

DATA_DIR = Path(__file__).parents[1] / "data"
BLOCK_TOKENS = 512  # Mooncake's hash_ids: one id per 512-token block of the prompt
SHIPPED_TRACES = {
    "mooncake-5min": DATA_DIR / "mooncake_conversation_5min.jsonl",
    "small": DATA_DIR / "trace_small.jsonl",
}


@dataclass(frozen=True)
class Workload:
    arrivals: np.ndarray  # seconds, at the device
    prompt_lens: np.ndarray
    output_lens: np.ndarray
    device_idx: np.ndarray  # which device profile serves each request
    name: str = "poisson"
    dropped: int = 0  # trace requests left out (longer than --max-input-len)
    cached_lens: np.ndarray | None = None  # leading prompt tokens in the cloud's prefix cache
    # Leading prompt tokens the device's session cache holds (the conversation's previous turn).
    device_cached_lens: np.ndarray | None = None

    @property
    def new_lens(self) -> np.ndarray:
        """Prompt tokens the cloud prefills: all of them, or those past its cached prefix."""
        if self.cached_lens is None:
            return self.prompt_lens
        return self.prompt_lens - self.cached_lens

    @property
    def device_cached(self) -> np.ndarray:
        if self.device_cached_lens is None:
            return np.zeros(len(self.prompt_lens), int)
        return self.device_cached_lens

    @property
    def device_new_lens(self) -> np.ndarray:
        """Prompt tokens the device prefills: those past its session cache."""
        return self.prompt_lens - self.device_cached

    def head(self, num: int) -> Workload:
        cut = slice(0, num)
        return replace(
            self,
            arrivals=self.arrivals[cut],
            prompt_lens=self.prompt_lens[cut],
            output_lens=self.output_lens[cut],
            device_idx=self.device_idx[cut],
            cached_lens=None if self.cached_lens is None else self.cached_lens[cut],
            device_cached_lens=(
                None if self.device_cached_lens is None else self.device_cached_lens[cut]
            ),
        )

    @property
    def mean_rate(self) -> float:
        return len(self.arrivals) / max(float(self.arrivals[-1] - self.arrivals[0]), 1e-9)


def trace_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    return SHIPPED_TRACES.get(text, Path(text))


def poisson_workload(
    rate: float, num: int, input_lens: list[int], output_len: int, num_devices: int, seed: int = 0
) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload(
        arrivals=np.cumsum(rng.exponential(1.0 / rate, num)),
        prompt_lens=rng.choice(np.asarray(input_lens), num),
        output_lens=np.full(num, output_len),
        device_idx=rng.integers(0, num_devices, num),
    )


def trace_workload(
    path: str | Path,
    num: int | None,
    num_devices: int,
    output_len: int | None = None,
    max_input_len: int | None = None,
    seed: int = 0,
    prefix_cache: bool = False,
    sessions: bool = False,
) -> Workload:
    """The trace's requests in order; ``num`` past its length repeats it, shifted in time.

    Answer lengths are the trace's own unless ``output_len`` is given; requests longer than
    ``max_input_len`` are dropped (counted in ``dropped``), never clipped. ``prefix_cache``:
    the leading blocks a request shares with any earlier one are in the cloud's prefix cache.
    ``sessions``: a follow-up (a request that extends an earlier one's blocks: the next turn of
    that conversation) runs on the same device, whose session cache holds the previous turn
    (``session_cached_lens``)."""
    trace = load_trace(trace_path(path))
    kept = [r for r in trace if max_input_len is None or r.input_length <= max_input_len]
    if not kept:
        raise ValueError(f"{path}: no request has at most {max_input_len} input tokens")
    num = num or len(kept)
    reqs = [kept[i % len(kept)] for i in range(num)]
    span = kept[-1].timestamp_s + 1.0
    arrivals = np.array([r.timestamp_s + (i // len(kept)) * span for i, r in enumerate(reqs)])
    device_idx = np.random.default_rng(seed).integers(0, num_devices, num)
    copy = np.arange(num) // len(kept)  # a repeat of the trace is new conversations, not turns
    device_cached = cloud_cached = None
    if prefix_cache:
        cloud_cached = np.array(cached_prefix_lens(kept))[np.arange(num) % len(kept)]
    if sessions:
        cached, previous = session_cached_lens(kept)
        device_cached = np.array(cached)[np.arange(num) % len(kept)]
        for i in range(num):
            prev = previous[i % len(kept)]
            if prev is not None:  # the conversation stays on its device
                device_idx[i] = device_idx[prev + copy[i] * len(kept)]
    return Workload(
        arrivals=arrivals,
        prompt_lens=np.array([r.input_length for r in reqs]),
        output_lens=np.array([output_len or r.output_length for r in reqs]),
        device_idx=device_idx,
        name=Path(str(path)).stem,
        dropped=len(trace) - len(kept),
        cached_lens=cloud_cached,
        device_cached_lens=device_cached,
    )


def session_cached_lens(
    reqs, block_tokens: int = BLOCK_TOKENS
) -> tuple[list[int], list[int | None]]:
    """Per request: the tokens a device session holds, and the request it follows up (or None).

    A request follows up the latest earlier one whose blocks it extends: it shares all of that
    request's leading blocks but its last (a turn's last block is partial, so the next turn's
    hash of it differs), and at least two: a first block alone is as often a system prompt
    that every user sends (Mooncake's block 0), so a one-block first turn's follow-up is missed
    (conservative). The device's cache then holds that turn's prompt and answer: min(shared
    blocks x 512, previous L + O), and at least one token is left to prefill. A branch off an
    older turn is not a follow-up.
    """
    latest: dict[tuple[int, ...], int] = {}  # a block prefix -> the latest request with it
    cached: list[int] = []
    previous: list[int | None] = []
    for i, r in enumerate(reqs):
        ids = tuple(r.hash_ids)
        prev, shared = None, 0
        for n in range(len(ids), 0, -1):
            j = latest.get(ids[:n])
            if j is not None:
                prev, shared = j, n
                break
        p = reqs[prev] if prev is not None else None
        if p is None or shared < max(len(p.hash_ids) - 1, 2):
            prev = None
        previous.append(prev)
        held = 0 if p is None or prev is None else p.input_length + p.output_length
        cached.append(max(0, min(shared * block_tokens, held, r.input_length - 1)))
        for n in range(1, len(ids) + 1):
            latest[ids[:n]] = i
    return cached, previous


def cached_prefix_lens(reqs, block_tokens: int = BLOCK_TOKENS) -> list[int]:
    """Per request: tokens of its leading blocks that an earlier request already had (at least
    one prompt token is always left to prefill)."""
    seen: set[int] = set()
    cached = []
    for r in reqs:
        key, hits, is_hit = 0, 0, True
        for block in r.hash_ids:
            key = hash((key, block))
            if is_hit and key in seen:
                hits += 1
            else:
                is_hit = False
            seen.add(key)
        cached.append(min(hits * block_tokens, r.input_length - 1))
    return cached


def scaled(work: Workload, rate: float) -> Workload:
    """The same requests at ``rate`` per second on average, the timeline's shape unchanged."""
    start = float(work.arrivals[0])
    return replace(work, arrivals=start + (work.arrivals - start) * (work.mean_rate / rate))


def tiled(work: Workload, num: int) -> Workload:
    """At least ``num`` requests: the workload repeated, each copy after the previous one (a
    probe must last long enough that a burst cannot hide in the TTFT SLO)."""
    copies = -(-num // len(work.arrivals))
    if copies <= 1:
        return work
    span = float(work.arrivals[-1] - work.arrivals[0]) + 1.0 / work.mean_rate
    shift = np.repeat(np.arange(copies) * span, len(work.arrivals))

    def rep(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.tile(a, copies)

    return replace(
        work,
        arrivals=np.tile(work.arrivals, copies) + shift,
        prompt_lens=rep(work.prompt_lens),
        output_lens=rep(work.output_lens),
        device_idx=rep(work.device_idx),
        cached_lens=rep(work.cached_lens),
        device_cached_lens=rep(work.device_cached_lens),
    )
