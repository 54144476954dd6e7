"""Reference solutions for notebook 04 (attention from scratch)."""

from __future__ import annotations

import numpy as np


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
