"""Reference solutions for notebook 11 (attention analysis)."""

from __future__ import annotations

import torch


def head_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean row entropy in nats of each head: ``(H, T, T) -> (H,)``; 0 · log 0 = 0."""
    plogp = torch.where(weights > 0, weights * weights.clamp_min(1e-30).log(), 0.0)
    return -plogp.sum(-1).mean(-1)


def zero_head(concat: torch.Tensor, head: int, num_heads: int) -> torch.Tensor:
    """A copy of ``concat (B, T, H * d_head)`` with head ``head``'s ``d_head`` columns zeroed."""
    d_head = concat.shape[-1] // num_heads
    out = concat.clone()
    out[..., head * d_head : (head + 1) * d_head] = 0
    return out
