"""Reference solutions for notebook 10 (the quadratic cost of attention)."""

from __future__ import annotations

import torch


def score_matrix_bytes(batch: int, heads: int, n: int, bytes_per_element: int = 4) -> int:
    """Bytes of the ``(batch, heads, n, n)`` attention score matrix."""
    return batch * heads * n * n * bytes_per_element


def online_softmax_update(
    running_max: torch.Tensor,
    running_sum: torch.Tensor,
    acc: torch.Tensor,
    scores: torch.Tensor,
    values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one block of keys into the running softmax state (one FlashAttention step).

    running_max, running_sum ``(rows, 1)``; acc ``(rows, dv)`` (unnormalised output);
    scores ``(rows, bk)`` for this block's keys; values ``(bk, dv)``.
    Returns the new ``(running_max, running_sum, acc)``; ``acc / running_sum`` after the last
    block equals ``softmax(all scores) @ all values``.
    """
    new_max = torch.maximum(running_max, scores.max(dim=-1, keepdim=True).values)  # (rows, 1)
    probs = torch.exp(scores - new_max)  # (rows, bk): ≤ 1, never overflows
    correction = torch.exp(running_max - new_max)  # (rows, 1): old terms were relative to the old max
    new_sum = correction * running_sum + probs.sum(dim=-1, keepdim=True)
    new_acc = correction * acc + probs @ values  # (rows, dv)
    return new_max, new_sum, new_acc
