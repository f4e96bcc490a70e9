"""OpenAI's two logprobs shapes, built from the engine's ``TokenLogprob`` entries.

Chat: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}``. Completions (the
legacy shape): ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``; with ``echo`` the
prompt's tokens come first, the very first one without a logprob (``None``), as OpenAI does.
A token's text is its own decoding (``tokenizer.decode([id])``).
"""

from __future__ import annotations

from common.messages import TokenLogprob


class LogprobFormatter:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def chat(self, entries: list[TokenLogprob]) -> dict:
        def item(token_id: int, logprob: float) -> dict:
            text = self.text(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        content = [
            item(e.token_id, e.logprob)
            | {"top_logprobs": [item(t.token_id, t.logprob) for t in e.top]}
            for e in entries
        ]
        return {"content": content, "refusal": None}

    def completion(
        self, entries: list[TokenLogprob | None], token_ids: list[int], text_offset: int
    ) -> dict:
        """``entries[i]`` for ``token_ids[i]`` (None: a token with no logprob, the first prompt
        token); ``text_offset``: where the first token's text starts in the choice's text."""
        tokens, offsets = [], []
        for token_id in token_ids:
            tokens.append(self.text(token_id))
            offsets.append(text_offset)
            text_offset += len(tokens[-1])
        return {
            "tokens": tokens,
            "token_logprobs": [None if e is None else e.logprob for e in entries],
            "top_logprobs": [
                None if e is None else {self.text(t.token_id): t.logprob for t in e.top}
                for e in entries
            ],
            "text_offset": offsets,
        }
