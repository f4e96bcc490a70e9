"""The refinement benchmark's prompt set: spans of ``corpus.txt`` plus a task (see README.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent
CORPUS_PATH = DATA / "corpus.txt"


def prompt_text(spec: dict, corpus: str) -> str:
    """A prompt spec (a corpus span and a task) as the user's message text."""
    passage = corpus[spec["start"] : spec["end"]].strip()
    if spec["kind"] == "needle":
        cut = passage.find(". ", int(spec["needle_depth"] * len(passage))) + 2
        cut = cut if cut > 1 else len(passage)
        passage = f"{passage[:cut]}{spec['needle']} {passage[cut:]}"
        task = f"Question: {spec['question']} Answer in one short sentence."
    else:
        task = spec["question"]
    return f"Read the following text.\n\n{passage}\n\n{task}"


@dataclass(frozen=True)
class Prompt:
    id: str
    kind: str
    text: str
    answer: str  # the needle's expected answer; "" for summaries


def load_prompts(path: Path = DATA / "prompts.json") -> list[Prompt]:
    corpus = CORPUS_PATH.read_text()
    specs = json.loads(path.read_text())
    return [Prompt(s["id"], s["kind"], prompt_text(s, corpus), s.get("answer", "")) for s in specs]


def mixed_order(prompts: list[Prompt]) -> list[Prompt]:
    """Kinds interleaved in proportion, so ``--limit N`` (or a partial run) samples all kinds."""
    kinds = {p.kind: [q for q in prompts if q.kind == p.kind] for p in prompts}
    rank = {q.id: (i + 0.5) / len(group) for group in kinds.values() for i, q in enumerate(group)}
    return sorted(prompts, key=lambda q: rank[q.id])
