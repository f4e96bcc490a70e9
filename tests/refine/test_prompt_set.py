"""The shipped benchmark prompt set and the quality metrics the benchmark reports."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.data.refine_prompts import load_prompts
from benchmarks.studies.refine_quality import agreement, rouge_l

DATA = Path(__file__).parents[2] / "benchmarks" / "data"


def test_prompt_set_has_30_real_prompts_of_512_to_2048_tokens(loaded_model):
    specs = json.loads((DATA / "prompts.json").read_text())
    prompts = load_prompts()
    assert len(prompts) >= 30
    for spec, prompt in zip(specs, prompts, strict=True):
        num_tokens = len(loaded_model.encode(prompt.text))
        assert num_tokens == spec["num_tokens"] and 512 <= num_tokens <= 2048
        if prompt.kind == "needle":
            assert spec["needle"] in prompt.text and prompt.answer not in spec["question"]


def test_corpus_is_large_plain_text():
    text = (DATA / "corpus.txt").read_text(encoding="ascii")
    assert len(text.split()) >= 60_000


def test_rouge_l_and_agreement():
    assert rouge_l([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert rouge_l([1, 2, 3, 4], [9, 9]) == 0.0
    assert abs(rouge_l([1, 2, 3, 4], [1, 9, 3, 4]) - 0.75) < 1e-9
    assert agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.75
    assert agreement([1, 2, 3, 4], [1, 2]) == 0.5
    assert agreement(list(range(40)), list(range(32)) + [0] * 8) == 1.0  # first 32 only
