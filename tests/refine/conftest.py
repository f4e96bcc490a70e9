"""Fixtures for the refinement tests: one short needle prompt, prefilled once under capture."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.data.refine_prompts import prompt_text
from cloud_server.refine import Capture, Refiner
from common.forward import forward_tokens, new_cache

CORPUS = Path(__file__).parents[2] / "benchmarks" / "data" / "corpus.txt"


@dataclass
class Captured:
    ids: list[int]
    cap: Capture


def needle_prompt_text() -> str:
    """~420 tokens of Ruth with one invented fact early on, and a question about it."""
    corpus = CORPUS.read_text()
    start = corpus.index("In the days", corpus.index("Ruth 1"))
    spec = {
        "kind": "needle",
        "start": start,
        "end": start + 1400,
        "needle": "The tent of the potter Elnaam was dyed bright orange.",
        "question": "What color was the tent of the potter Elnaam?",
        "needle_depth": 0.2,
    }
    return prompt_text(spec, corpus)


@pytest.fixture(scope="session")
def refiner(loaded_model) -> Refiner:
    return Refiner(loaded_model.model, loaded_model.tokenizer)


@pytest.fixture(scope="session")
def captured(loaded_model, refiner) -> Captured:
    ids = loaded_model.encode(needle_prompt_text())
    model = loaded_model.model
    with refiner.capture() as cap:
        forward_tokens(model, ids, list(range(len(ids))), new_cache(model))
    return Captured(ids, cap)
