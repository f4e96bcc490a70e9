"""What the front ends read about the model served by vLLM, without loading it in transformers.

vLLM loads the weights itself (in its engine process); here only the tokenizer, the config and a
16x16 sample of the input embedding are read from the same folder, so the fingerprint is exactly
the one ``common.model.load_model`` computes: a device with another model is refused as on the
builtin engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase

from common.model import LoadedModel, model_fingerprint, resolve_model_dir

_EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")


@dataclass(frozen=True)
class EnginePlatform:
    name: str  # shown by /health, e.g. "vllm-cpu"


@dataclass(frozen=True)
class ServedModel:
    """The ``LoadedModel`` fields the front ends and validation use (no torch module)."""

    tokenizer: PreTrainedTokenizerBase
    name: str
    path: Path
    platform: EnginePlatform
    fingerprint: str
    eos_token_ids: frozenset[int]
    max_context: int

    encode = LoadedModel.encode  # uses only the tokenizer: one chat-template rule for both


def load_served_model(name_or_path: str, platform_name: str) -> ServedModel:
    path = resolve_model_dir(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    return ServedModel(
        tokenizer=tokenizer,
        name=name_or_path,
        path=path,
        platform=EnginePlatform(platform_name),
        fingerprint=fingerprint_from_files(path, config, tokenizer),
        eos_token_ids=eos_ids_from_files(path, tokenizer),
        max_context=int(getattr(config, "max_position_embeddings", 2048)),
    )


def fingerprint_from_files(path: Path, config, tokenizer: PreTrainedTokenizerBase) -> str:
    """``model_fingerprint`` fed from the checkpoint files instead of a loaded module."""
    sample = _embedding_sample(path)
    embeddings = SimpleNamespace(weight=sample)
    shim = SimpleNamespace(config=config, get_input_embeddings=lambda: embeddings)
    return model_fingerprint(shim, tokenizer)


def eos_ids_from_files(path: Path, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The same rule as ``common.model``: generation config's eos ids plus the tokenizer's."""
    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


def _embedding_sample(path: Path) -> torch.Tensor:
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    else:
        with safe_open(path / "model.safetensors", framework="pt") as f:
            weight_map = dict.fromkeys(f.keys(), "model.safetensors")
    name = next((n for n in weight_map if n.endswith(_EMBEDDING_SUFFIXES)), None)
    if name is None:
        raise FileNotFoundError(f"no input embedding among the tensors of {path}")
    with safe_open(path / weight_map[name], framework="pt") as f:
        return f.get_slice(name)[:16, :16].float()
