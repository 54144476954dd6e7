"""Reference solutions for notebook 05 (multi-head attention).

``GroupedQueryAttention`` is the ``gqa`` piece of the learner's transformer (the contract in
``course_utils.learner``): HF Llama's submodule names, RoPE from the ``rope`` piece
(notebook 03), a KV cache passed in and returned. Notebook 08's ``LlamaBlock`` uses it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from course_utils.solutions.nb03 import apply_rope


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, T, num_heads * d_head) -> (B, num_heads, T, d_head)``.

    Head h owns the contiguous slice ``[h * d_head, (h + 1) * d_head)`` of each token's vector.
    """
    batch, seq_len, width = x.shape
    return x.view(batch, seq_len, num_heads, width // num_heads).transpose(1, 2)


def repeat_kv_heads(kv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, Hkv, T, d) -> (B, num_heads, T, d)``: query head h reads KV head h // group.

    ``group = num_heads // Hkv`` consecutive query heads share one KV head (the Llama
    layout), so each KV head is repeated *in place*: [k0, k0, k0, k1, k1, k1, ...].
    """
    group = num_heads // kv.shape[1]
    return kv.repeat_interleave(group, dim=1)


class GroupedQueryAttention(nn.Module):
    """Grouped-query attention with RoPE and a KV cache (the ``gqa`` piece).

    ``n_heads`` query heads share ``n_kv_heads`` key/value heads: query head h reads KV head
    ``h // (n_heads // n_kv_heads)``. ``n_kv_heads == n_heads`` is plain multi-head
    attention, ``n_kv_heads == 1`` multi-query attention. head_dim = d_model // n_heads.
    ``bias`` puts biases on all four projections (HF Llama's ``attention_bias``).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int,
                 rope_base: float | None = 10000.0, bias: bool = False) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.rope_base = rope_base
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x ``(B, T, C)``, positions ``(T,)``, mask boolean ``(T, T_total)`` (True = may attend).

        Returns the output ``(B, T, C)`` and the new cache ``(k, v)``, each
        ``(B, n_kv_heads, T_total, head_dim)`` with k already rotated.
        """
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope_base is not None:  # rotate q and k, never v
            q = apply_rope(q, positions, self.rope_base)
            k = apply_rope(k, positions, self.rope_base)
        if past_kv is not None:  # the cache grows along the time axis
            k = torch.cat([past_kv[0], k], dim=2)  # (B, KV, T_total, hd)
            v = torch.cat([past_kv[1], v], dim=2)
        group = self.n_heads // self.n_kv_heads
        k_all = k.repeat_interleave(group, dim=1)  # (B, H, T_total, hd): head h reads h // group
        v_all = v.repeat_interleave(group, dim=1)
        scores = q @ k_all.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, T_total)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = scores.softmax(dim=-1) @ v_all  # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # concat heads
        return self.o_proj(out), (k, v)
