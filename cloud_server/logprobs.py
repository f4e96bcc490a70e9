"""Log-probabilities for the OpenAI ``logprobs`` / ``echo`` parameters, from the model's logits.

Computed on the raw distribution (log-softmax of the logits, before temperature, top-k and top-p),
as OpenAI and vLLM report them. Answer tokens use the logits the sampler already has; prompt
tokens (``echo`` with ``logprobs``) need one extra forward over the prompt with every position's
logits, run in slices so a long prompt never holds ``[L, vocab]`` at once.
"""

from __future__ import annotations

import torch

from common.messages import TokenLogprob, TopLogprob

_SLICE = 128  # prompt positions per lm-head call


def token_logprob(logits: torch.Tensor, token_id: int, num_top: int) -> TokenLogprob:
    """``logits``: [vocab] at one position; the chosen token's logprob and the top ``num_top``."""
    logprobs = torch.log_softmax(logits.detach().float().cpu(), dim=-1)
    return _entry(logprobs, token_id, num_top)


@torch.inference_mode()
def prompt_logprobs(
    model: torch.nn.Module, prompt_ids: list[int], num_top: int
) -> list[TokenLogprob]:
    """Logprob of prompt token i given tokens < i, for i = 1 .. L-1."""
    device = model.device
    input_ids = torch.tensor([prompt_ids], device=device)  # [1, L]
    hidden = model.base_model(input_ids=input_ids).last_hidden_state[0]  # [L, hidden]
    head = model.get_output_embeddings()
    out: list[TokenLogprob] = []
    for start in range(0, len(prompt_ids) - 1, _SLICE):
        end = min(start + _SLICE, len(prompt_ids) - 1)
        rows = torch.log_softmax(head(hidden[start:end]).float().cpu(), dim=-1)  # [n, vocab]
        out += [
            _entry(row, prompt_ids[i + 1], num_top)
            for i, row in zip(range(start, end), rows, strict=True)
        ]
    return out


def _entry(logprobs: torch.Tensor, token_id: int, num_top: int) -> TokenLogprob:
    top: list[TopLogprob] = []
    if num_top:
        values, ids = torch.topk(logprobs, num_top)
        top = [
            TopLogprob(token_id=int(i), logprob=float(v)) for v, i in zip(values, ids, strict=True)
        ]
    return TokenLogprob(token_id=token_id, logprob=float(logprobs[token_id]), top=top)
