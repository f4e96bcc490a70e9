"""A conversation's token ids, built turn by turn from the chat template, never re-tokenized.

The next turn's prompt is the ids so far, the answer's ids as shown, the template tokens that
close an assistant turn, and the new user turn (its message and the generation prompt). That
equals what the template renders for the whole history only if the template renders a longer
conversation as a continuation of a shorter one, and keeps an answer's ids as they are. Both are
checked: once per template on a probe conversation (``TemplateCheck``), and at every turn against
the template's own rendering of the real history (``TurnBuilder.next_prompt``). Where a check
fails the turn's prompt is the template's rendering of the history as text, and the device
reuses its cache only up to the first token that differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

_PROBE = (
    ("user", "Hello there."),
    ("assistant", "Hi! How can I help?"),
    ("user", "Tell me a joke."),
    ("assistant", "Why did the chicken cross the road?"),
    ("user", "Another one, please."),
)


@dataclass(frozen=True)
class TemplateCheck:
    is_incremental: bool  # turn-by-turn ids equal the template's rendering of the history
    reason: str = ""  # why not, for the user


@dataclass(frozen=True)
class NextPrompt:
    token_ids: list[int]
    rerendered: str | None = None  # why the template's own rendering was used, or None


def _first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


class TurnBuilder:
    """Turn-by-turn prompt ids for one tokenizer and system prompt."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, system: str | None = None) -> None:
        if not tokenizer.chat_template:
            raise ValueError("sessions need a chat model: this tokenizer has no chat template")
        self._tok = tokenizer
        self._head = [{"role": "system", "content": system}] if system is not None else []
        self.closing_ids: list[int] = []
        self.check = self._probe()

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        ids = self._tok.apply_chat_template(
            self._head + messages,
            add_generation_prompt=add_generation_prompt,
            tokenize=True,
            return_dict=False,
        )
        return list(ids)

    def encode_content(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False).input_ids)

    def decode(self, token_ids: list[int]) -> str:
        return self._tok.decode(
            token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def _probe(self) -> TemplateCheck:
        """Derive the closing ids and check turn-by-turn building on a 3-question conversation."""
        msgs = [{"role": r, "content": c} for r, c in _PROBE]
        opening = self.render(msgs[:1])
        answered = self.render(msgs[:2], add_generation_prompt=False)
        content = self.encode_content(msgs[1]["content"])
        end = len(opening) + len(content)
        if answered[: len(opening)] != opening or answered[len(opening) : end] != content:
            return TemplateCheck(False, "the template does not render an answer after its prompt")
        self.closing_ids = answered[end:]
        built = list(opening)
        for k in (1, 3):  # answer k, then user turn k + 1
            turn = self._user_turn(msgs[: k + 1], msgs[k + 1]["content"])
            if turn is None:
                return TemplateCheck(False, "the template renders earlier turns differently later")
            built += self.encode_content(msgs[k]["content"]) + self.closing_ids + turn
        full = self.render(msgs)
        if built != full:
            at = _first_difference(built, full)
            return TemplateCheck(False, f"turn-by-turn ids differ from the template at token {at}")
        return TemplateCheck(True)

    def _user_turn(self, history: list[dict], message: str) -> list[int] | None:
        """The ids a user turn adds after ``history`` (ending with an answer), generation prompt
        included; None if the template re-renders the history differently."""
        before = self.render(history, add_generation_prompt=False)
        after = self.render(history + [{"role": "user", "content": message}])
        return after[len(before) :] if after[: len(before)] == before else None

    def first_prompt(self, message: str) -> list[int]:
        return self.render([{"role": "user", "content": message}])

    def next_prompt(
        self,
        history_ids: list[int],
        messages: list[dict],
        answers: list[tuple[int, int]],
        message: str,
    ) -> NextPrompt:
        """The prompt for ``message`` after a history (its ids, its messages as text, and where
        each answer's ids sit in ``history_ids``). ``history_ids`` ends with the closing ids."""
        rendered = self.render(messages + [{"role": "user", "content": message}])
        if not self.check.is_incremental:
            return NextPrompt(rendered, self.check.reason)
        turn = self._user_turn(_probe_pair(), message)
        if turn is None:
            return NextPrompt(rendered, "the template renders this message differently in context")
        ids = history_ids + turn
        # The same ids with every answer re-tokenized from its text: a difference here is the
        # template's, not tokenization's (an answer's ids are kept as the model produced them).
        respliced, last = [], 0
        for start, end in answers:
            respliced += ids[last:start] + self.encode_content(self.decode(ids[start:end]))
            last = end
        respliced += ids[last:]
        if respliced != rendered:
            at = _first_difference(respliced, rendered)
            return NextPrompt(
                rendered, f"the template renders this history differently (token {at})"
            )
        return NextPrompt(ids)


def _probe_pair() -> list[dict]:
    return [{"role": r, "content": c} for r, c in _PROBE[:2]]
