"""Reference solutions for notebook 10 (the quadratic cost of attention)."""

from __future__ import annotations

import math

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


def tiled_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
    block_q: int = 64, block_k: int = 64,
) -> torch.Tensor:
    """FlashAttention's tile loop (teaching version, one thread): exact softmax(q kᵀ/√d) v
    without the n × n score matrix.

    q ``(B, H, Tq, d)``, k ``(B, H, Tk, d)``, v ``(B, H, Tk, dv)`` -> ``(B, H, Tq, dv)``.
    For each block of queries: walk over the key blocks it may see, keeping a running max
    ``m``, a running sum ``l`` and an unnormalised output ``acc``; divide once at the end.
    ``causal`` (Tq == Tk): key blocks after the query block are skipped, the diagonal tile
    is masked with global positions. The fast version is ``course_utils.flash_attention``.
    """
    batch, heads, n_q, d = q.shape
    n_k, d_v = k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(d)
    out = torch.empty(batch, heads, n_q, d_v, dtype=q.dtype)
    for q_start in range(0, n_q, block_q):
        q_end = min(q_start + block_q, n_q)
        q_block = q[:, :, q_start:q_end] * scale  # (B, H, bq, d)
        running_max = torch.full((batch, heads, q_end - q_start, 1), -math.inf, dtype=q.dtype)
        running_sum = torch.zeros(batch, heads, q_end - q_start, 1, dtype=q.dtype)
        acc = torch.zeros(batch, heads, q_end - q_start, d_v, dtype=q.dtype)
        last_key = q_end if causal else n_k  # causal: no key after the block's last query
        for k_start in range(0, last_key, block_k):
            k_end = min(k_start + block_k, last_key)
            scores = q_block @ k[:, :, k_start:k_end].transpose(-2, -1)  # (B, H, bq, bk)
            if causal and k_end - 1 > q_start:  # a tile the diagonal crosses
                rows = torch.arange(q_start, q_end).unsqueeze(1)  # global query positions
                cols = torch.arange(k_start, k_end).unsqueeze(0)  # global key positions
                scores = scores.masked_fill(cols > rows, -math.inf)
            new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
            probs = torch.exp(scores - new_max)  # (B, H, bq, bk)
            correction = torch.exp(running_max - new_max)  # rescales what came before
            running_sum = correction * running_sum + probs.sum(dim=-1, keepdim=True)
            acc = correction * acc + probs @ v[:, :, k_start:k_end]
            running_max = new_max
        out[:, :, q_start:q_end] = acc / running_sum
    return out
