"""Reference solutions for notebook 12 (MiniGPT and induction heads).

Try the exercises first: the checkers in ``course_utils.exercises.nb12`` compare your code
with the course's own training loop (``course_utils.training``) and with ``course_utils.analysis``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def lr_at(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_lr: float) -> float:
    """Learning rate at 0-based ``step`` of ``total_steps``: a linear warm-up to ``peak_lr``
    over the first ``warmup_steps`` steps (step 0 already gets ``peak_lr / warmup_steps``),
    then a cosine from ``peak_lr`` down to ``min_lr``, reached exactly at the last step
    ``total_steps - 1``. Equals ``TrainConfig(steps=total_steps, lr=peak_lr,
    warmup_steps=warmup_steps, min_lr_ratio=min_lr / peak_lr).lr_at(step)``."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps - 1)  # 0 -> 1
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor,
               lr: float, grad_clip: float = 1.0) -> float:
    """One optimisation step of a language model on windows ``tokens`` ``(B, T + 1)``.

    The model reads ``tokens[:, :-1]`` ``(B, T)`` and returns logits ``(B, T, V)``; the
    targets are the next tokens ``tokens[:, 1:]``. Returns the batch's mean cross-entropy
    (a float, before the update).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) each: target t is input t + 1
    logits = model(inputs)  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def induction_score(weights: torch.Tensor, first_start: int, block_len: int) -> torch.Tensor:
    """Per-head induction score ``(H, T, T) -> (H,)`` on one ``[prefix, block, block]``
    sequence: mean attention from each query i of the second copy, except its last (the
    token after it is not in the copy, so nothing is predicted by copying there), to key
    i - block_len + 1."""
    second = first_start + block_len
    queries = torch.arange(second, second + block_len - 1)
    keys = queries - block_len + 1
    return weights[:, queries, keys].mean(-1)
