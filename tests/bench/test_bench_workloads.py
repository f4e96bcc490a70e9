"""Trace loading, arrivals and prompts of an exact token length."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from benchmarks.bench.workloads import (
    BenchRequest,
    PromptMaker,
    arrival_offsets,
    check_context,
    load_trace,
)

SHIPPED = Path(__file__).parents[2] / "benchmarks" / "data" / "trace_small.jsonl"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text(text)
    return path


def test_shipped_trace_loads_sorted_from_zero():
    trace = load_trace(SHIPPED)
    assert len(trace) >= 5
    assert trace[0].timestamp_ms == 0
    assert [t.timestamp_s for t in trace] == sorted(t.timestamp_s for t in trace)


def test_trace_ignores_extra_keys_and_rebases_time(tmp_path):
    rows = [
        {"timestamp": 5000, "input_length": 10, "output_length": 2, "hash_ids": [1]},
        {"timestamp": 3000, "input_length": 20, "output_length": 4},
    ]
    trace = load_trace(write(tmp_path, "\n".join(json.dumps(r) for r in rows)))
    assert [(t.timestamp_ms, t.input_length) for t in trace] == [(0, 20), (2000, 10)]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{oops\n', ":2: not a Mooncake"),
        ('{"timestamp": 0, "input_length": 5}\n', ":1: not a Mooncake"),
        ('{"timestamp": 0, "input_length": 0, "output_length": 3}\n', ":1: lengths must be"),
        ("\n\n", "empty trace"),
    ],
)
def test_trace_errors_name_the_line(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_trace(write(tmp_path, text))


def test_missing_trace_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_trace(tmp_path / "nope.jsonl")


def test_arrivals_all_at_once_or_gamma():
    assert arrival_offsets(3, math.inf, 1.0, 0) == [0.0, 0.0, 0.0]
    offsets = arrival_offsets(400, 10.0, 1.0, seed=1)
    assert offsets == sorted(offsets) and offsets[0] == 0.0
    assert offsets == arrival_offsets(400, 10.0, 1.0, seed=1)  # seeded
    assert 30 < offsets[-1] < 50  # mean gap 1/rate: 399 gaps of 0.1 s
    with pytest.raises(ValueError):
        arrival_offsets(3, 0.0, 1.0, 0)


def test_prompts_have_the_exact_length_and_chat_template(loaded_model):
    maker = PromptMaker(loaded_model)
    rng = random.Random(0)
    for length in (64, 300, 1024):
        ids = maker.make(length, rng)
        assert len(ids) == length
        text = loaded_model.tokenizer.decode(ids)
        assert text.startswith("<|im_start|>system") and text.rstrip().endswith("assistant")
        assert "Retell the passage above" in text


def test_too_short_prompt_and_context_overflow_are_clear(loaded_model):
    with pytest.raises(ValueError, match="too short"):
        PromptMaker(loaded_model).make(10, random.Random(0))
    req = BenchRequest(0, [1] * 8190, 8, 0.0)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        check_context([req], loaded_model.max_context)
