"""Our per-index sampler inside vLLM: seeded sampling stays identical across the handoff.

vLLM samples with its own RNG, so a vLLM cloud and a transformers device would draw different
tokens from the same logits. This logits processor runs ``common.sampling.sample_token`` (the
sampler the builtin engine and the device use: token ``i`` drawn with a generator seeded from
``(seed, i)``) on each pd row's logits, then masks every other token. The request itself is sent
to vLLM as greedy, so vLLM's argmax picks exactly our token. Rows without our extra argument
(greedy pd requests) are left alone.

A row whose sampling fails ends alone: the processor logs the error, writes it to a fault file
named by the request (``FAULT_DIR_ENV``, a folder the engine creates) and forces the row's stop
token, so vLLM finishes that request at once; the engine reads the file and ends the request with
an error. The other rows of the batch are sampled as usual.

vLLM builds this class in its worker process from the name ``cloud_server.vllm_sampler:PdSampler``
(``AsyncEngineArgs(logits_processors=[...])``); it imports only ``common`` and vLLM's interface.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from common.messages import SamplingParams
from common.sampling import sample_token

EXTRA_ARG = "pd_sampling"  # key in vLLM's SamplingParams.extra_args: our SamplingParams as a dict
FAULT_ARG = "pd_fault"  # {"key": file name, "token": stop token forced on a failure}
FAULT_DIR_ENV = "PDD_VLLM_FAULT_DIR"
QUALNAME = "cloud_server.vllm_sampler:PdSampler"

log = logging.getLogger(__name__)


def extra_args_for(params: SamplingParams, fault_token: int = 0, key: str = "") -> dict | None:
    """What a request carries to the sampler; None for greedy rows (vLLM's argmax is ours)."""
    if params.is_greedy:
        return None
    return {EXTRA_ARG: params.model_dump(), FAULT_ARG: {"key": key, "token": fault_token}}


def fault_path(key: str) -> Path | None:
    """Where a failed row's error is written (None without a fault folder or key)."""
    folder = os.environ.get(FAULT_DIR_ENV)
    return Path(folder) / f"{key}.err" if folder and key else None


@dataclass
class _Row:
    params: SamplingParams
    output_ids: list[int]  # vLLM's live list of this request's generated tokens
    fault_key: str = ""
    fault_token: int = 0
    has_failed: bool = False

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
            try:
                token_id = row.fault_token if row.has_failed else self._draw(logits, row_index, row)
            except Exception as err:  # this row only: the batch goes on
                token_id = self._fail(row, err)
            chosen = logits[row_index, token_id].clone()
            logits[row_index].fill_(float("-inf"))
            logits[row_index, token_id] = chosen.nan_to_num(0.0, 0.0, 0.0)
        return logits

    @staticmethod
    def _draw(logits: torch.Tensor, row_index: int, row: _Row) -> int:
        return sample_token(logits[row_index], row.params, len(row.output_ids))

    @staticmethod
    def _fail(row: _Row, err: Exception) -> int:
        """Record the failure where the engine finds it; the row's stop token ends it."""
        log.exception("pd sampler failed on request %s; ending it", row.fault_key or "?")
        row.has_failed = True
        path = fault_path(row.fault_key)
        if path is not None:
            path.write_text(f"cloud sampler error: {type(err).__name__}: {err}")
        return row.fault_token


def _new_row(params, prompt_ids: list[int] | None, output_ids: list[int]) -> _Row | None:
    args = (params.extra_args or {}).get(EXTRA_ARG)
    if args is None:
        return None
    fault = params.extra_args.get(FAULT_ARG) or {}
    return _Row(
        SamplingParams.model_validate(args),
        output_ids,
        fault_key=str(fault.get("key", "")),
        fault_token=int(fault.get("token", 0)),
    )
