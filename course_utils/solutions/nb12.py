"""Reference solutions for notebook 12 (MiniGPT and induction heads)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, total_steps: int, peak_lr: float, warmup_steps: int,
                  min_lr: float) -> float:
    """Learning rate at 0-based ``step``: linear warm-up to ``peak_lr`` over ``warmup_steps``
    steps (step 0 gets ``peak_lr / warmup_steps``), then a cosine down to ``min_lr`` at the
    last step ``total_steps - 1``."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps - 1)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def induction_score(weights: torch.Tensor, first_start: int, block_len: int) -> torch.Tensor:
    """Per-head induction score ``(H, T, T) -> (H,)`` on one ``[prefix, block, block]``
    sequence: mean attention from each query i of the second copy, except its last (the
    token after it is not in the copy, so nothing is predicted by copying there), to key
    i - block_len + 1."""
    second = first_start + block_len
    queries = torch.arange(second, second + block_len - 1)
    keys = queries - block_len + 1
    return weights[:, queries, keys].mean(-1)
