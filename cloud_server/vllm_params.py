"""What one request asks of vLLM (its ``SamplingParams``), and vLLM's logprobs as ours.

- **Sampling.** Greedy and seeded pd rows run as greedy in vLLM; a seeded row's token is drawn by
  our ``PdSampler`` (``vllm_sampler.py``), so the device continues the same random stream.
  ``EngineExtras`` with penalties (OpenAI routes only) hand the row to vLLM's own sampler instead:
  vLLM applies penalties after the logits processors, so our sampler would never see them. Those
  answers are cloud-only, so no device has to continue them; ``seed`` still makes them
  reproducible (vLLM's per-request generator).
- **Logprobs.** vLLM returns raw logprobs (log-softmax of the logits before processors, penalties
  and temperature: what the builtin engine reports) for the chosen token and the top ``k``, each
  with its rank; a position is ``{token_id: Logprob}``.
"""

from __future__ import annotations

from common.messages import TokenLogprob, TopLogprob

from .engine_api import EngineExtras
from .sequence import Sequence
from .vllm_sampler import extra_args_for


def sampling_params_for(
    seq: Sequence, eos_ids: frozenset[int], extras: EngineExtras | None, fault_key: str = ""
):
    """vLLM's parameters for ``seq``; ``fault_key`` names its fault file (``vllm_sampler``)."""
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    request, native = seq.request, extras is not None and extras.uses_penalties
    ignore_eos = extras is not None and extras.ignore_eos
    sampling = request.sampling
    fault_token = min(eos_ids) if eos_ids else 0
    common = {
        "max_tokens": seq.max_new_tokens,
        "stop_token_ids": [] if ignore_eos else sorted(eos_ids),
        "ignore_eos": ignore_eos,
        "detokenize": False,  # our Detokenizer makes the text, exactly as on builtin
        "skip_special_tokens": False,
        "output_kind": RequestOutputKind.DELTA,
        "logprobs": request.logprobs,
        "prompt_logprobs": request.prompt_logprobs,
    }
    if not native:  # seeded rows: PdSampler leaves vLLM's argmax one token to pick
        extra = extra_args_for(sampling, fault_token, fault_key)
        return VllmSamplingParams(temperature=0.0, extra_args=extra, **common)
    return VllmSamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k or 0,
        seed=None if sampling.is_greedy else sampling.seed,
        presence_penalty=extras.presence_penalty,
        frequency_penalty=extras.frequency_penalty,
        repetition_penalty=extras.repetition_penalty,
        **common,
    )


def token_logprob(position: dict, token_id: int, num_top: int) -> TokenLogprob:
    """One position of vLLM's logprobs: the chosen token's and the top ``num_top`` by rank."""
    ranked = sorted(
        ((lp.rank, tid, lp.logprob) for tid, lp in position.items() if lp.rank is not None),
        key=lambda item: (item[0], -item[2]),
    )
    top = [TopLogprob(token_id=int(t), logprob=float(v)) for r, t, v in ranked if r <= num_top]
    return TokenLogprob(
        token_id=token_id, logprob=float(position[token_id].logprob), top=top[:num_top]
    )


def prompt_logprobs(positions: list, prompt_ids: list[int], num_top: int) -> list[TokenLogprob]:
    """vLLM's prompt logprobs (``None`` for the first token) as ours, for tokens 1 .. L-1."""
    return [
        token_logprob(position, prompt_ids[i], num_top)
        for i, position in enumerate(positions)
        if i > 0 and position is not None
    ]
