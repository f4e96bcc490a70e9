"""Our per-index sampler inside vLLM: seeded sampling stays identical across the handoff.

vLLM samples with its own RNG, so a vLLM cloud and a transformers device would draw different
tokens from the same logits. This logits processor runs ``common.sampling.sample_token`` (the
sampler the builtin engine and the device use: token ``i`` drawn with a generator seeded from
``(seed, i)``) on each pd row's logits, then masks every other token. The request itself is sent
to vLLM as greedy, so vLLM's argmax picks exactly our token. Rows without our extra argument
(greedy pd requests) are left alone.

vLLM builds this class in its worker process from the name ``cloud_server.vllm_sampler:PdSampler``
(``AsyncEngineArgs(logits_processors=[...])``); it imports only ``common`` and vLLM's interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from common.messages import SamplingParams
from common.sampling import sample_token

EXTRA_ARG = "pd_sampling"  # key in vLLM's SamplingParams.extra_args: our SamplingParams as a dict
QUALNAME = "cloud_server.vllm_sampler:PdSampler"


def extra_args_for(params: SamplingParams) -> dict | None:
    """What a request carries to the sampler; None for greedy rows (vLLM's argmax is ours)."""
    return None if params.is_greedy else {EXTRA_ARG: params.model_dump()}


@dataclass
class _Row:
    params: SamplingParams
    output_ids: list[int]  # vLLM's live list of this request's generated tokens

    def __bool__(self) -> bool:  # vLLM's dict helper tests entries for truth
        return True


class PdSampler(LogitsProcessor):
    """Decides each pd row's token with our seeded sampler (not argmax-invariant)."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self._rows: dict[int, _Row] = {}

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        args = (sampling_params.extra_args or {}).get(EXTRA_ARG)
        if args is not None:
            SamplingParams.model_validate(args)  # raises ValueError on a malformed argument

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self._rows, batch_update, _new_row)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits``: [num_rows, vocab]; a pd row keeps only the token our sampler drew."""
        for row_index, row in self._rows.items():
            token_id = sample_token(logits[row_index], row.params, len(row.output_ids))
            chosen = logits[row_index, token_id].clone()
            logits[row_index].fill_(float("-inf"))
            logits[row_index, token_id] = chosen
        return logits


def _new_row(params, prompt_ids: list[int] | None, output_ids: list[int]) -> _Row | None:
    args = (params.extra_args or {}).get(EXTRA_ARG)
    if args is None:
        return None
    return _Row(SamplingParams.model_validate(args), output_ids)
