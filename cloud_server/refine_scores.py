"""Attention scores of the last W prompt positions, captured during the normal prefill forward.

No eager attention and no second pass: forward hooks keep the outputs of ``q_proj`` (last W rows
only) and ``k_proj`` of a few layers plus the rotary ``(cos, sin)`` the model computed; after the
forward, ``ScoreRecorder.scores()`` applies RoPE and computes ``softmax(q k^T / sqrt(d))`` for those
W queries only, i.e. a [heads, W, L] block instead of the [heads, L, L] the model attended.

A prompt prefilled after a cached prefix (the engine's prefix cache) takes the prefix's keys from
that cache, where they are stored already rotated (``ScoreRecorder.seed_keys``); its last W
positions are always computed fresh (``scheduler.max_cached_prefix``), so the scoring queries
are hooked.
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
    k_prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal softmax attention of the last W queries over all L keys, summed over heads and queries.

    q_last: [W, heads*d] (pre-RoPE), k_all: [n, kv_heads*d] (pre-RoPE), cos/sin: [n, d] for
    those n positions; ``k_prefix``: [kv_heads, L - n, d], the keys of a cached prefix before
    them, already rotated (as a KV cache holds them). Returns [L] float32.
    """
    window = q_last.shape[0]
    head_dim = cos.shape[-1]
    num_kv_heads = k_all.shape[-1] // head_dim
    cos, sin = cos.float(), sin.float()
    q = q_last.float().view(window, num_heads, head_dim).transpose(0, 1)  # [H, W, d]
    k = k_all.float().view(k_all.shape[0], num_kv_heads, head_dim).transpose(0, 1)  # [KV, n, d]
    q = _rope(q, cos[-window:], sin[-window:])
    k = _rope(k, cos, sin)
    if k_prefix is not None:
        k = torch.cat([k_prefix.float(), k], dim=1)  # [KV, L, d]
    num_keys = k.shape[1]
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
        self.k_prefix: dict[int, torch.Tensor] = {}  # a cached prefix's rotated keys [KV, P, d]
        self.error: str | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self) -> None:
        inner = self.model.model
        self._handles.append(inner.rotary_emb.register_forward_hook(self._on_rope))
        for i in self.layers:
            attn = inner.layers[i].self_attn
            self._handles.append(attn.q_proj.register_forward_hook(self._q_hook(i)))
            self._handles.append(attn.k_proj.register_forward_hook(self._k_hook(i)))

    def seed_keys(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The prompt continues a cached prefix: ``kv`` is the cache's per-layer (keys, values),
        keys [1, KV, P, d] already rotated; the scored layers' keys are taken from it."""
        for i in self.layers:
            keys = kv[i][0]
            if keys.dim() != 4 or keys.shape[0] != 1:
                self.error = f"a cached prefix of one prompt expected, got {tuple(keys.shape)}"
                return
            self.k_prefix[i] = keys[0]

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
        """Positions scored: a cached prefix's and those the forwards ran."""
        cached = next(iter(self.k_prefix.values())).shape[1] if self.k_prefix else 0
        return cached + sum(cos.shape[0] for cos, _ in self.rope_parts)

    def scores(self) -> torch.Tensor:
        """[L] float32 on CPU: attention mass per prompt position, summed over the scored layers."""
        config = self.model.config
        cos = torch.cat([c for c, _ in self.rope_parts])  # [n, d]: the positions run
        sin = torch.cat([s for _, s in self.rope_parts])  # [n, d]
        window = min(self.window, cos.shape[0])
        total = torch.zeros(self.num_positions, device=cos.device)  # [L]
        for i in self.layers:
            attn = self.model.model.layers[i].self_attn
            q_last = torch.cat(self.q_parts[i])[-window:]  # [W, H*d]
            k_all = torch.cat(self.k_parts[i])  # [n, KV*d]
            scaling = getattr(attn, "scaling", cos.shape[-1] ** -0.5)
            total += attention_scores(
                q_last, k_all, cos, sin, config.num_attention_heads, scaling, self.k_prefix.get(i)
            )
        return total.cpu()
