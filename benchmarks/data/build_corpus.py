"""Rebuild corpus.txt from Debian's public-domain World English Bible (run once, by hand).

apt-get install diatheke sword-text-web
python benchmarks/data/build_corpus.py > benchmarks/data/corpus.txt
"""

from __future__ import annotations

import re
import subprocess

MODULE = "engWEB2015eb"
# (book, number of chapters): narrative books, plain prose a small model can follow.
BOOKS = [("Genesis", 50), ("Ruth", 4), ("Esther", 10), ("Jonah", 4), ("Exodus", 22)]
_ASCII = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "—": "-"})
_VERSE = re.compile(r"^[1-3]?\s?[A-Za-z ]+ \d+:\d+: ?(.*)$")


def _clean(verse: str) -> str:
    text = re.sub(r"<[^>]*>", " ", verse)  # Strong's numbers; some stand where a space was
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r" ([,.;:!?’”])", r"\1", text)
    return text.translate(_ASCII)


def chapter_text(book: str, chapter: int) -> str:
    out = subprocess.run(
        ["diatheke", "-b", MODULE, "-o", "n", "-f", "plain", "-k", f"{book} {chapter}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    verses: list[str] = []
    for line in out.splitlines():
        match = _VERSE.match(line)
        if match:
            verses.append(match.group(1))
        elif verses and not line.startswith("("):  # a poetry verse goes on over several lines
            verses[-1] += " " + line
    verses = [_clean(v) for v in verses]
    return " ".join(v for v in verses if v)


def main() -> None:
    for book, num_chapters in BOOKS:
        for chapter in range(1, num_chapters + 1):
            print(f"{book} {chapter}\n\n{chapter_text(book, chapter)}\n")


if __name__ == "__main__":
    main()
