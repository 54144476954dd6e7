"""Reference solutions for notebook 02 (embeddings): cosine similarity and mean pooling."""

from __future__ import annotations

import torch


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, C), (M, C) -> (N, M)``: cosine between every row of a and every row of b."""
    a_unit = a / a.norm(dim=-1, keepdim=True)  # (N, C), each row of length 1
    b_unit = b / b.norm(dim=-1, keepdim=True)  # (M, C)
    return a_unit @ b_unit.T  # (N, M)


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T, C), (B, T) -> (B, C)``: the mean over real tokens (mask 1), padding ignored."""
    mask = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1)  # (B, C)


# 02.1 and 02.4: the course's own versions (read them in course_utils/embeddings.py).
from course_utils.embeddings import bert_embeddings, sentence_embedding  # noqa: E402

__all__ = ["bert_embeddings", "cosine_similarity", "mean_pool", "sentence_embedding"]
