"""Reference solutions for notebook 05 (multi-head attention)."""

from __future__ import annotations

import torch


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
