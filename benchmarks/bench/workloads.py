"""Workloads for ``pdd bench`` and the tuner/simulator: traces, prompts of a given length, arrivals.

Mooncake JSONL: one request per line, ``{"timestamp": ms, "input_length": int,
"output_length": int, "hash_ids": [int, ...]}`` (``hash_ids`` optional; other keys ignored).

Prompts are real text: a passage of ``data/corpus.txt`` (public-domain World English Bible prose)
starting at a seeded sentence, wrapped in a task and the chat template exactly as a user prompt is
(``LoadedModel.encode``), with the passage trimmed until the templated prompt has the requested
number of tokens.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

CORPUS_PATH = Path(__file__).parents[1] / "data" / "corpus.txt"
TASK = "\n\nRetell the passage above in your own words, in detail."
_MIN_PASSAGE_TOKENS = 1


@dataclass(frozen=True)
class TraceRequest:
    timestamp_s: float  # arrival, seconds from the trace start
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...] = ()  # the prompt's 512-token prefix blocks (Mooncake)

    @property
    def timestamp_ms(self) -> float:
        return self.timestamp_s * 1000.0


@dataclass(frozen=True)
class BenchRequest:
    """One benchmark request: the same ids are sent in every mode."""

    index: int
    prompt_ids: list[int]
    output_len: int  # max_tokens
    arrival_s: float  # offset from the benchmark start

    @property
    def input_len(self) -> int:
        return len(self.prompt_ids)


def load_trace(path: str | Path) -> list[TraceRequest]:
    """Read a Mooncake JSONL trace; a bad line raises ValueError naming its line number."""
    requests = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the trace ({exc.strerror or exc})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            req = TraceRequest(
                timestamp_s=float(row["timestamp"]) / 1000.0,
                input_length=int(row["input_length"]),
                output_length=int(row["output_length"]),
                hash_ids=tuple(int(h) for h in row.get("hash_ids", ())),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{lineno}: not a Mooncake trace line ({exc})") from None
        if req.input_length < 1 or req.output_length < 1 or req.timestamp_s < 0:
            raise ValueError(f"{path}:{lineno}: lengths must be >= 1, timestamp >= 0")
        requests.append(req)
    if not requests:
        raise ValueError(f"{path}: empty trace")
    start = min(r.timestamp_s for r in requests)
    return sorted(
        (
            TraceRequest(r.timestamp_s - start, r.input_length, r.output_length, r.hash_ids)
            for r in requests
        ),
        key=lambda r: r.timestamp_s,
    )


def arrival_offsets(
    num_requests: int, request_rate: float, burstiness: float, seed: int
) -> list[float]:
    """vLLM's arrivals: all at 0 for an infinite rate, else gamma-distributed gaps with mean
    1/rate and shape ``burstiness`` (1 = Poisson; < 1 burstier; > 1 more regular)."""
    if request_rate <= 0 or burstiness <= 0:
        raise ValueError("request rate and burstiness must be > 0")
    if math.isinf(request_rate):
        return [0.0] * num_requests
    rng = random.Random(seed)
    scale = 1.0 / (request_rate * burstiness)
    offsets, now = [], 0.0
    for _ in range(num_requests):
        offsets.append(now)
        now += rng.gammavariate(burstiness, scale)
    return offsets


class PromptMaker:
    """Cuts corpus passages into chat prompts of an exact token length."""

    def __init__(self, lm, corpus_path: Path = CORPUS_PATH) -> None:
        self.lm = lm
        self.text = corpus_path.read_text()
        self.overhead = len(self._encode(""))  # template + task tokens around the passage

    def _encode(self, passage: str) -> list[int]:
        return self.lm.encode(messages=[{"role": "user", "content": passage + TASK}])

    def _passage_ids(self, rng: random.Random, num_tokens: int) -> list[int]:
        start = rng.randrange(0, len(self.text) // 2)
        start = self.text.find(". ", start) + 2  # a sentence start
        window = self.text[start : start + 8 * num_tokens + 64]
        ids = self.lm.tokenizer(window, add_special_tokens=False).input_ids
        if len(ids) < num_tokens:
            raise ValueError(f"the corpus has no passage of {num_tokens} tokens")
        return ids

    def make(self, num_tokens: int, rng: random.Random) -> list[int]:
        """Templated prompt ids of exactly ``num_tokens`` (or the closest shorter length)."""
        if num_tokens < self.overhead + _MIN_PASSAGE_TOKENS:
            raise ValueError(
                f"input length {num_tokens} is too short: the chat template and task alone "
                f"take {self.overhead} tokens"
            )
        passage = self._passage_ids(rng, num_tokens)
        num_passage, best = num_tokens - self.overhead, None
        for _ in range(8):  # re-tokenizing the decoded cut can merge or split a token or two
            ids = self._encode(self.lm.tokenizer.decode(passage[:num_passage]))
            if len(ids) <= num_tokens and (best is None or len(ids) > len(best)):
                best = ids
            if len(ids) == num_tokens:
                break
            num_passage -= len(ids) - num_tokens
        assert best is not None, "trimming the passage always ends at or below the target"
        return best


def synthetic_requests(
    lm, input_lens: list[int], output_len: int, num_prompts: int, seed: int
) -> list[BenchRequest]:
    """``num_prompts`` per input length, interleaved by length (128, 512, 128, 512, ...)."""
    maker, rng = PromptMaker(lm), random.Random(seed)
    lens = [length for _ in range(num_prompts) for length in input_lens]
    return [
        BenchRequest(i, maker.make(length, rng), output_len, 0.0) for i, length in enumerate(lens)
    ]


def trace_requests(lm, trace: list[TraceRequest], seed: int) -> list[BenchRequest]:
    maker, rng = PromptMaker(lm), random.Random(seed)
    return [
        BenchRequest(i, maker.make(t.input_length, rng), t.output_length, t.timestamp_s)
        for i, t in enumerate(trace)
    ]


def check_context(requests: list[BenchRequest], max_context: int) -> None:
    for req in requests:
        if req.input_len + req.output_len > max_context:
            raise ValueError(
                f"request {req.index}: input {req.input_len} + output {req.output_len} tokens "
                f"exceeds the model's context of {max_context} tokens"
            )
