"""A scripted multi-turn conversation of real text: the book of Jonah from ``corpus.txt``.

Each chapter is pasted as a user turn with a question, then a short follow-up asks about it, so
the turns alternate between long new input (a document: the cloud's first token pays) and short
follow-ups (the device's cache holds the history: it may answer alone). Chapter lengths with the
SmolLM2 tokenizer: 604, 242, 308 and 392 tokens.
"""

from __future__ import annotations

from pathlib import Path

CORPUS_PATH = Path(__file__).with_name("corpus.txt")

_QUESTIONS = {
    1: ("What does Jonah do when he is told to go to Nineveh?", "Why do the sailors throw him?"),
    2: ("Where is Jonah in this chapter?", "What happens to him at the end?"),
    3: ("What do the people of Nineveh do?", "Does God destroy the city?"),
    4: ("Why is Jonah angry?", "What does God answer him?"),
}


def chapter(book: str, number: int, corpus_path: Path = CORPUS_PATH) -> str:
    """The text of ``book number`` (one paragraph under its title line)."""
    lines = corpus_path.read_text().split("\n")
    at = lines.index(f"{book} {number}")
    return lines[at + 2]


def jonah_turns(chapters: tuple[int, ...] = (1, 2, 3, 4)) -> list[str]:
    """User messages: per chapter, the chapter with a question, then a follow-up question."""
    turns = []
    for number in chapters:
        question, follow_up = _QUESTIONS[number]
        turns.append(
            f"Here is chapter {number} of a story.\n\n{chapter('Jonah', number)}\n\n{question}"
        )
        turns.append(follow_up)
    return turns
