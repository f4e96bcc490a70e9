"""Rebuild prompts.json: the refinement benchmark's fixed prompt set, as spans of corpus.txt.

    python benchmarks/data/build_prompts.py

Each prompt is a corpus passage (cut at sentence ends) and a task. ``needle`` prompts insert one
invented fact sentence at a chosen depth and ask about it; ``summary`` prompts ask for a summary.
The texts are not stored, only where they come from (``benchmarks.studies.refine_quality.load_prompts``
rebuilds them); ``num_tokens`` is the SmolLM2 length after the chat template.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.data.refine_prompts import prompt_text
from common.model import load_model

DATA = Path(__file__).parent
# (fact sentence, question, expected answer): invented, so only the prompt can tell the answer.
NEEDLES = [
    (
        "The steward of the granary at On was a man named Pethuel.",
        "What was the name of the steward of the granary at On?",
        "Pethuel",
    ),
    (
        "The cloak that Abihail wove had exactly seven silver threads in its hem.",
        "How many silver threads were in the hem of Abihail's cloak?",
        "seven",
    ),
    (
        "The shepherd who guarded the well of Sirah was called Keturion.",
        "Who guarded the well of Sirah?",
        "Keturion",
    ),
    (
        "The merchant Zimran sold his camels for forty pieces of copper.",
        "For how many pieces of copper did Zimran sell his camels?",
        "forty",
    ),
    (
        "The tent of the potter Elnaam was dyed bright orange.",
        "What color was the tent of the potter Elnaam?",
        "orange",
    ),
    (
        "The secret password of the city gate of Timnah was 'almond blossom'.",
        "What was the secret password of the city gate of Timnah?",
        "almond blossom",
    ),
    (
        "The youngest daughter of the scribe Hanun was named Merab.",
        "What was the name of the youngest daughter of the scribe Hanun?",
        "Merab",
    ),
    (
        "The caravan from Dedan carried nine jars of honey.",
        "How many jars of honey did the caravan from Dedan carry?",
        "nine",
    ),
    (
        "The lamp in the house of Ozem was made of green glass.",
        "What was the lamp in the house of Ozem made of?",
        "green glass",
    ),
    (
        "The boat of the fisherman Jaziz was named The Swift Heron.",
        "What was the name of the boat of the fisherman Jaziz?",
        "Swift Heron",
    ),
    (
        "The old judge Maadai kept a tame owl in his courtyard.",
        "What animal did the old judge Maadai keep in his courtyard?",
        "owl",
    ),
    (
        "The road from Kedar to the sea took exactly twelve days to walk.",
        "How many days did the road from Kedar to the sea take to walk?",
        "twelve",
    ),
    (
        "The favorite food of the builder Shimrith was roasted chestnuts.",
        "What was the favorite food of the builder Shimrith?",
        "chestnuts",
    ),
    (
        "The bell of the watchtower at Zobah rang only at midnight.",
        "When did the bell of the watchtower at Zobah ring?",
        "midnight",
    ),
    (
        "The physician Raddai cured fevers with a tea of mint and willow bark.",
        "What did the physician Raddai use to cure fevers?",
        "mint and willow bark",
    ),
    (
        "The ring that Pharaoh's baker lost was found by a boy named Eshban.",
        "Who found the ring that Pharaoh's baker lost?",
        "Eshban",
    ),
    (
        "The garden of Ithream had one hundred and three fig trees.",
        "How many fig trees did the garden of Ithream have?",
        "one hundred and three",
    ),
    (
        "The singer Azubah played a harp with twenty strings.",
        "How many strings did the harp of the singer Azubah have?",
        "twenty",
    ),
    (
        "The treasurer Bildad hid the silver under a broken millstone.",
        "Where did the treasurer Bildad hide the silver?",
        "millstone",
    ),
    (
        "The mother of the carpenter Jaalam came from the island of Caphtor.",
        "Where did the mother of the carpenter Jaalam come from?",
        "Caphtor",
    ),
    (
        "The horse of the captain Abner was white with a black mane.",
        "What did the horse of the captain Abner look like?",
        "white",
    ),
    (
        "The feast of the new wells was held on the fourth day of the month.",
        "On which day of the month was the feast of the new wells held?",
        "fourth",
    ),
]
SUMMARY_TASKS = [
    "Summarize the text above in three sentences.",
    "Who are the main people in the text above, and what happens to them?",
]
TARGET_TOKENS = [520, 640, 760, 880, 1000, 1150, 1300, 1450, 1600, 1750, 1900, 2000]
NEEDLE_DEPTHS = [0.1, 0.25, 0.4, 0.55, 0.7, 0.85]
_SENTENCE_END = re.compile(r"(?<=[.!?\"'])\s+")


def sentence_starts(corpus: str) -> list[int]:
    """Char offsets where a sentence starts (never inside a chapter title line)."""
    starts = [m.end() for m in _SENTENCE_END.finditer(corpus)]
    return [s for s in starts if s < len(corpus) and corpus[s].isupper()]


def fit_span(corpus, starts, first, target, encode, make_text) -> int:
    """Index into ``starts`` where the passage ends so the prompt is at most ``target`` tokens."""

    def num_tokens(end: int) -> int:
        return len(encode(make_text(corpus[starts[first] : starts[end]])))

    end = first + 1
    while num_tokens(end) < target:
        end += 8
    while num_tokens(end) > target and end > first + 1:
        end -= 1
    return end


def build(corpus: str, encode) -> list[dict]:
    starts = sentence_starts(corpus)
    tasks = [("needle", n) for n in NEEDLES] + [("summary", t) for t in SUMMARY_TASKS * 6]
    stride = (len(starts) - 400) // len(tasks)  # the last passage needs room to grow
    specs = []
    for i, (kind, task) in enumerate(tasks):
        first = i * stride
        spec = {"id": f"{kind}-{i:02d}", "kind": kind, "start": starts[first]}
        if kind == "needle":
            spec.update(needle=task[0], question=task[1], answer=task[2])
            spec["needle_depth"] = NEEDLE_DEPTHS[i % len(NEEDLE_DEPTHS)]
        else:
            spec["question"] = task
        target = TARGET_TOKENS[i % len(TARGET_TOKENS)]

        def make_text(passage, spec=spec):
            return prompt_text({**spec, "end": spec["start"] + len(passage)}, corpus)

        end = fit_span(corpus, starts, first, target, encode, make_text)
        spec["end"] = starts[end]
        spec["num_tokens"] = len(encode(prompt_text(spec, corpus)))
        specs.append(spec)
    return specs


def main() -> None:
    loaded = load_model()
    corpus = (DATA / "corpus.txt").read_text()
    specs = build(corpus, lambda text: loaded.encode(text))
    (DATA / "prompts.json").write_text(json.dumps(specs, indent=1) + "\n")
    print(
        f"{len(specs)} prompts, tokens {min(s['num_tokens'] for s in specs)}-"
        f"{max(s['num_tokens'] for s in specs)}"
    )


if __name__ == "__main__":
    main()
