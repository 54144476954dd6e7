"""Used in notebooks 04, 05, 06, 10: attention from scratch, softmax(Q Kᵀ / √d) V, then many heads.

Masks are boolean, **True = may attend** (see ``course_utils.masks``). A query whose keys
are all masked gets all-zero weights and a zero output, never NaN.

Bad input (not a tensor, an integer dtype, mismatched dtypes, a wrong rank, shapes that do
not fit together, a zero-sized head dimension) raises a ``ValueError`` naming the argument;
``tests/test_validation.py`` feeds these functions random bad inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from course_utils.positional import apply_rope


def _check_tensors(**tensors: object) -> None:
    """q, k, v are floating-point torch tensors of one dtype."""
    dtypes = {}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.dtype.is_floating_point:
            raise ValueError(
                f"{name} must be a floating-point tensor, got dtype {value.dtype} "
                f"(convert with {name}.float())"
            )
        dtypes[name] = value.dtype
    if len(set(dtypes.values())) > 1:
        shown = ", ".join(f"{name} {dtype}" for name, dtype in dtypes.items())
        raise ValueError(f"q, k, v must share one dtype, got {shown}")


def _check_qkv(q_shape, k_shape, v_shape) -> None:
    if len(q_shape) < 2 or len(k_shape) < 2 or len(v_shape) < 2:
        raise ValueError(
            "q, k, v must have shapes (..., Tq, d), (..., Tk, d), (..., Tk, dv); got "
            f"q {tuple(q_shape)}, k {tuple(k_shape)}, v {tuple(v_shape)}"
        )
    if q_shape[-1] != k_shape[-1]:
        raise ValueError(
            f"q and k must share their last dimension d: got q {tuple(q_shape)} and "
            f"k {tuple(k_shape)}"
        )
    if q_shape[-1] == 0:
        raise ValueError(f"q and k need a head dimension d > 0 (scores are divided by √d), "
                         f"got q {tuple(q_shape)}")
    if k_shape[-2] != v_shape[-2]:
        raise ValueError(
            f"k and v must have the same number of keys Tk: got k {tuple(k_shape)} and "
            f"v {tuple(v_shape)}"
        )
    try:  # leading (batch, head) axes must broadcast, or q @ kᵀ fails with a cryptic error
        np.broadcast_shapes(tuple(q_shape[:-2]), tuple(k_shape[:-2]), tuple(v_shape[:-2]))
    except ValueError:
        raise ValueError(
            "the leading (batch, ...) axes of q, k, v must broadcast; got "
            f"q {tuple(q_shape)}, k {tuple(k_shape)}, v {tuple(v_shape)}"
        ) from None


def _check_mask_shape(mask_shape, scores_shape) -> None:
    try:
        broadcast = np.broadcast_shapes(tuple(mask_shape), tuple(scores_shape))
    except ValueError:
        broadcast = None
    if broadcast != tuple(scores_shape):
        raise ValueError(
            f"mask of shape {tuple(mask_shape)} does not broadcast to the scores' shape "
            f"(..., Tq, Tk) = {tuple(scores_shape)}"
        )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / √d) v, returning ``(output, weights)``.

    q ``(..., Tq, d)``, k ``(..., Tk, d)``, v ``(..., Tk, dv)``; ``mask`` boolean (True = may
    attend) broadcastable to ``(..., Tq, Tk)``. Returns output ``(..., Tq, dv)`` and weights
    ``(..., Tq, Tk)`` whose rows sum to 1 — or are all 0 for a fully masked query row.
    """
    out, weights, _ = _attention_with_scores(q, k, v, mask)
    return out, weights


def _attention_with_scores(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``scaled_dot_product_attention`` that also returns the scores q kᵀ/√d before the
    mask ``(..., Tq, Tk)``: the one implementation, shared with ``MultiHeadAttention``'s
    ``return_states``."""
    _check_tensors(q=q, k=k, v=v)
    _check_qkv(q.shape, k.shape, v.shape)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    masked = scores
    if mask is not None:
        mask = torch.as_tensor(mask, device=scores.device)
        if mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be boolean (True = may attend), got dtype {mask.dtype}; "
                "for a 1/0 mask use mask.bool()"
            )
        _check_mask_shape(mask.shape, scores.shape)
        masked = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(masked, dim=-1)
    if mask is not None:
        # A row with every key masked is softmax(-inf, ..., -inf) = NaN: define it as 0.
        weights = torch.nan_to_num(weights, nan=0.0)
    return weights @ v, weights, scores


def scaled_dot_product_attention_numpy(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The NumPy twin of ``scaled_dot_product_attention`` (same shapes, same conventions)."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    for name, array in (("q", q), ("k", k), ("v", v)):
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    _check_qkv(q.shape, k.shape, v.shape)
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])  # (..., Tq, Tk)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise ValueError(f"mask must be boolean (True = may attend), got dtype {mask.dtype}")
        _check_mask_shape(mask.shape, scores.shape)
        scores = np.where(mask, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)  # fully masked rows
    exp = np.exp(scores - row_max)  # subtract the max: no overflow
    total = exp.sum(axis=-1, keepdims=True)
    weights = np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Multi-head attention with optional grouped-query sharing and rotary positions.

    ``num_kv_heads`` (default ``num_heads``) K/V heads are shared by groups of
    ``num_heads // num_kv_heads`` query heads: query head h reads KV head
    ``h // (num_heads // num_kv_heads)`` (the Llama layout). ``rope_base`` set -> RoPE is
    applied to q and k (Llama style). Projections are ``q_proj``, ``k_proj``, ``v_proj``,
    ``out_proj`` so real weights (BERT, nn.MultiheadAttention, Llama) copy straight in.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        bias: bool = True,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        rope_base: float | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("num_heads", num_heads),
                            ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if value is None and name in ("num_kv_heads", "head_dim"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        if rope_base is not None and (
            isinstance(rope_base, bool) or not isinstance(rope_base, (int, float))
            or not math.isfinite(rope_base) or rope_base <= 1
        ):
            raise ValueError(f"rope_base must be None or a finite number > 1 (e.g. 10000.0), "
                             f"got {rope_base!r}")
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(
                    f"d_model ({d_model}) must be divisible by num_heads ({num_heads}): "
                    f"each head gets d_model / num_heads dimensions"
                )
            head_dim = d_model // num_heads
        if rope_base is not None and head_dim % 2:
            raise ValueError(f"head_dim must be even with rope_base set (RoPE rotates pairs), "
                             f"got head_dim {head_dim}")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_heads ({num_heads}) must be a multiple of num_kv_heads "
                f"({num_kv_heads}): each KV head serves a whole group of query heads"
            )
        self.d_model, self.num_heads, self.num_kv_heads = d_model, num_heads, num_kv_heads
        self.head_dim, self.rope_base = head_dim, rope_base
        self.q_proj = nn.Linear(d_model, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, num_kv_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * head_dim, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """``(B, T, heads * d) -> (B, heads, T, d)``."""
        batch, seq_len, _ = x.shape
        return x.view(batch, seq_len, heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        return_states: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict]:
        """Self-attention on x, or cross-attention from x to ``context``.

        x ``(B, Tq, d_model)``; context ``(B, Tk, d_model)`` (default x); mask boolean,
        broadcastable to ``(B, H, Tq, Tk)``; positions ``(Tq,)``/``(B, Tq)`` for RoPE (default
        0..T-1, self-attention only). Returns output ``(B, Tq, d_model)`` and weights
        ``(B, H, Tq, Tk)``.

        ``return_states=True`` returns ``(out, weights, states)``, states (in computation
        order): ``q``, ``k``, ``v`` ``(B, H, T, d_head)`` (after RoPE if any; K/V already
        repeated for grouped-query), ``scores`` ``(B, H, Tq, Tk)`` = q kᵀ/√d before the
        mask, ``attn_weights``, ``context`` ``(B, Tq, H·d_head)`` (heads concatenated,
        before W_O) and ``attn_out`` (= out). Same code path as the plain call.
        """
        weight_dtype = self.q_proj.weight.dtype
        for name, value in (("x", x), ("context", context)):
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{name} must be a torch.Tensor of shape (batch, seq_len, "
                                 f"d_model={self.d_model}), got {type(value).__name__}")
            if value.dtype != weight_dtype:
                raise ValueError(f"{name} must have this module's dtype {weight_dtype}, got "
                                 f"{value.dtype} (convert with {name}.to({weight_dtype}))")
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have shape (batch, seq_len, d_model={self.d_model}), "
                f"got {tuple(x.shape)}"
            )
        context = x if context is None else context
        if context.dim() != 3 or context.shape[-1] != self.d_model or context.shape[0] != x.shape[0]:
            raise ValueError(
                f"context must have shape (batch={x.shape[0]}, seq_len, d_model={self.d_model}),"
                f" got {tuple(context.shape)}"
            )
        q = self.split_heads(self.q_proj(x), self.num_heads)  # (B, H, Tq, d)
        k = self.split_heads(self.k_proj(context), self.num_kv_heads)  # (B, Hkv, Tk, d)
        v = self.split_heads(self.v_proj(context), self.num_kv_heads)  # (B, Hkv, Tk, d)
        if self.rope_base is not None:
            if positions is None:
                if context is not x:
                    raise ValueError("RoPE cross-attention needs explicit positions")
                positions = torch.arange(x.shape[1], device=x.device)
            q = apply_rope(q, positions, self.rope_base)
            k = apply_rope(k, positions, self.rope_base)
        group = self.num_heads // self.num_kv_heads
        if group > 1:  # query head h reads KV head h // group
            k = k.repeat_interleave(group, dim=1)  # (B, H, Tk, d)
            v = v.repeat_interleave(group, dim=1)
        heads, weights, scores = _attention_with_scores(q, k, v, mask)  # (B, H, Tq, d)
        context = heads.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)  # (B, Tq, H*d)
        out = self.out_proj(context)  # (B, Tq, d_model)
        if not return_states:
            return out, weights
        states = {"q": q, "k": k, "v": v, "scores": scores, "attn_weights": weights,
                  "context": context, "attn_out": out}
        return out, weights, states
