"""Prompts shared by the device tests."""

from __future__ import annotations

# Long enough that a slowed-down device is still prefilling when the cloud's first tokens
# arrive, so the handoff lands mid-answer and the absorb path runs.
LONG_PROMPT = (
    "Here are some notes about a small town.\n"
    "The town of Alder Creek sits in a valley between two ridges. It has one bakery, run by a "
    "woman named Mira, who opens at five every morning. The library is open on weekdays and "
    "holds about four thousand books. A river runs along the east side of the town, and in "
    "spring it floods the meadow by the old mill. The school has ninety pupils and three "
    "teachers. Every autumn the town holds a fair with a pumpkin contest.\n"
    "Question: who runs the bakery, and when does it open? Answer in two sentences."
)
SHORT_PROMPT = "Name three primary colours."
COUNTING_PROMPT = "Count from one to one hundred in words, separated by commas."
