"""Attention scores of the last W prompt positions, captured during the normal prefill forward.

No eager attention and no second pass: forward hooks keep the outputs of ``q_proj`` (last W rows
only) and ``k_proj`` of a few layers plus the rotary ``(cos, sin)`` the model computed; after the
forward, ``ScoreRecorder.scores()`` applies RoPE and computes ``softmax(q k^T / sqrt(d))`` for those
W queries only, i.e. a [heads, W, L] block instead of the [heads, L, L] the model attended.
"""

from __future__ import annotations

import torch

# Architectures whose attention is q_proj/k_proj -> RoPE(rotate_half) -> softmax(q k^T * scaling),
# with grouped KV heads: exactly what ``attention_scores`` recomputes.
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """None if scores can be captured from ``model``, else why not (shown to the device)."""
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"attention scores are not captured for model type {model_type!r}"
    inner = getattr(model, "model", None)
    if not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return f"model type {model_type!r} without the expected layers/rotary_emb modules"
    return None


def default_score_layers(num_layers: int, num_scored: int = 4) -> tuple[int, ...]:
    """``num_scored`` layers spread over the upper three quarters of the depth."""
    first = num_layers // 4
    step = (num_layers - 1 - first) / max(num_scored - 1, 1)
    return tuple(sorted({round(first + i * step) for i in range(num_scored)}))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [heads, n, d]; cos, sin: [n, d]."""
    return x * cos + _rotate_half(x) * sin


def attention_scores(
    q_last: torch.Tensor,
    k_all: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_heads: int,
    scaling: float,
) -> torch.Tensor:
    """Causal softmax attention of the last W queries over all L keys, summed over heads and queries.

    q_last: [W, heads*d] (pre-RoPE), k_all: [L, kv_heads*d] (pre-RoPE), cos/sin: [L, d].
    Returns [L] float32.
    """
    num_keys, window = k_all.shape[0], q_last.shape[0]
    head_dim = cos.shape[-1]
    num_kv_heads = k_all.shape[-1] // head_dim
    cos, sin = cos.float(), sin.float()
    q = q_last.float().view(window, num_heads, head_dim).transpose(0, 1)  # [H, W, d]
    k = k_all.float().view(num_keys, num_kv_heads, head_dim).transpose(0, 1)  # [KV, L, d]
    q = _rope(q, cos[-window:], sin[-window:])
    k = _rope(k, cos, sin)
    k = k.repeat_interleave(num_heads // num_kv_heads, dim=0)  # [H, L, d], head h reads kv h // g
    logits = torch.matmul(q, k.transpose(1, 2)) * scaling  # [H, W, L]
    query_pos = torch.arange(num_keys - window, num_keys, device=q.device)  # [W]
    key_pos = torch.arange(num_keys, device=q.device)  # [L]
    future = key_pos[None, :] > query_pos[:, None]  # [W, L]
    logits = logits.masked_fill(future, float("-inf"))
    return torch.softmax(logits, dim=-1).sum(dim=(0, 1))  # [L]


class ScoreRecorder:
    """Forward hooks on a few layers; collects what ``attention_scores`` needs, call by call.

    Several forward calls inside one capture (a chunked prefill) are concatenated in order.
    """

    def __init__(self, model: torch.nn.Module, layers: tuple[int, ...], window: int) -> None:
        self.model = model
        self.layers = layers
        self.window = window
        self.q_parts: dict[int, list[torch.Tensor]] = {i: [] for i in layers}  # [<=W, H*d] each
        self.k_parts: dict[int, list[torch.Tensor]] = {i: [] for i in layers}  # [n, KV*d] each
        self.rope_parts: list[tuple[torch.Tensor, torch.Tensor]] = []  # ([n, d], [n, d])
        self.error: str | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self) -> None:
        inner = self.model.model
        self._handles.append(inner.rotary_emb.register_forward_hook(self._on_rope))
        for i in self.layers:
            attn = inner.layers[i].self_attn
            self._handles.append(attn.q_proj.register_forward_hook(self._q_hook(i)))
            self._handles.append(attn.k_proj.register_forward_hook(self._k_hook(i)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _batch_one(self, out: torch.Tensor) -> torch.Tensor | None:
        if out.dim() != 3 or out.shape[0] != 1:
            self.error = f"scores need a batch of one prompt, got output shape {tuple(out.shape)}"
            return None
        return out[0]

    def _on_rope(self, _module, _args, output) -> None:
        cos, sin = output  # [1, n, d] each
        cos, sin = self._batch_one(cos), self._batch_one(sin)
        if cos is not None and sin is not None:
            self.rope_parts.append((cos, sin))

    def _q_hook(self, layer: int):
        def hook(_module, _args, output: torch.Tensor) -> None:
            q = self._batch_one(output)  # [n, H*d]
            if q is not None:  # keep only the rows that can be among the last W
                self.q_parts[layer].append(q[-self.window :].detach().clone())

        return hook

    def _k_hook(self, layer: int):
        def hook(_module, _args, output: torch.Tensor) -> None:
            k = self._batch_one(output)  # [n, KV*d]
            if k is not None:
                self.k_parts[layer].append(k.detach())

        return hook

    @property
    def num_positions(self) -> int:
        return sum(cos.shape[0] for cos, _ in self.rope_parts)

    def scores(self) -> torch.Tensor:
        """[L] float32 on CPU: attention mass per prompt position, summed over the scored layers."""
        config = self.model.config
        cos = torch.cat([c for c, _ in self.rope_parts])  # [L, d]
        sin = torch.cat([s for _, s in self.rope_parts])  # [L, d]
        window = min(self.window, cos.shape[0])
        total = torch.zeros(cos.shape[0], device=cos.device)  # [L]
        for i in self.layers:
            attn = self.model.model.layers[i].self_attn
            q_last = torch.cat(self.q_parts[i])[-window:]  # [W, H*d]
            k_all = torch.cat(self.k_parts[i])  # [L, KV*d]
            scaling = getattr(attn, "scaling", cos.shape[-1] ** -0.5)
            total += attention_scores(q_last, k_all, cos, sin, config.num_attention_heads, scaling)
        return total.cpu()
