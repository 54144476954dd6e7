"""Reference solutions for notebook 04 (attention from scratch): the NumPy warm-ups (softmax,
attention), the head search, and the piece ``attention`` (``SelfAttention``)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, stable for large scores: subtract each row's max first."""
    shifted = scores - scores.max(axis=-1, keepdims=True)  # exp(<= 0) never overflows
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q kᵀ / √d) v for q ``(Tq, d)``, k ``(Tk, d)``, v ``(Tk, dv)`` -> ``(Tq, dv)``."""
    scores = q @ k.T / np.sqrt(q.shape[-1])  # (Tq, Tk)
    return softmax(scores) @ v


def antecedent_attention(attentions: np.ndarray, query: int, key: int) -> tuple[int, int, float]:
    """The (layer, head) whose weight from token ``query`` to token ``key`` is largest.

    ``attentions``: ``(L, H, T, T)``. Returns ``(layer, head, weight)``.
    """
    weights = attentions[:, :, query, key]  # (L, H)
    layer, head = np.unravel_index(np.argmax(weights), weights.shape)
    return int(layer), int(head), float(weights[layer, head])


class SelfAttention(nn.Module):
    """Multi-head self-attention with an output projection (piece ``attention``, exercise 04.3).

    ``query``, ``key``, ``value``, ``out``: ``nn.Linear(d_model, d_model)`` with bias (BERT's
    names: load MiniLM's ``attention.self.{query,key,value}`` and ``attention.output.dense``).
    ``forward(x (B, T, C), mask)``: mask is boolean, True = may attend, broadcastable to
    ``(B, H, T, T)`` (a padding mask is ``(B, 1, 1, T)``), or None = attend to every key.
    Returns ``(B, T, C)``: the attention sublayer before dropout, residual and LayerNorm.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, H, T, d)
            return t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))  # before the softmax
        weights = F.softmax(scores, dim=-1)  # over the keys
        context = weights @ v  # (B, H, T, d)
        return self.out(context.transpose(1, 2).reshape(B, T, C))  # heads back side by side
