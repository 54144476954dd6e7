"""Reference solutions for notebook 06 (masks).

``causal_mask``, ``padding_mask`` and ``sliding_window_mask`` are the ``masks`` piece of the
learner's transformer (the contract in ``course_utils.learner``); boolean, True = may attend,
the same conventions as ``course_utils.masks``.
"""

from __future__ import annotations

import torch


def causal_mask(n: int) -> torch.Tensor:
    """``(n, n)`` boolean: query i may attend to keys j <= i (itself included)."""
    i = torch.arange(n).unsqueeze(1)  # (n, 1) queries
    j = torch.arange(n).unsqueeze(0)  # (1, n) keys
    return j <= i


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A tokenizer's ``(B, T)`` 1/0 mask -> boolean ``(B, 1, 1, T)``: which *keys* are real.

    The two size-1 axes broadcast over the heads and the queries of ``(B, H, T, T)`` scores.
    """
    return attention_mask.bool()[:, None, None, :]


def sliding_window_mask(n: int, window: int) -> torch.Tensor:
    """``(n, n)`` boolean: query i may attend to the ``window`` keys i - window + 1 .. i."""
    i = torch.arange(n).unsqueeze(1)  # (n, 1) queries
    j = torch.arange(n).unsqueeze(0)  # (1, n) keys
    return (j <= i) & (j > i - window)


def causal_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A tokenizer's ``(B, T)`` 1/0 mask -> boolean ``(B, 1, T, T)`` (True = may attend).

    Query i may attend to key j when j <= i (causal) and key j is a real token (padding).
    The size-1 axis broadcasts over heads of ``(B, H, T, T)`` scores.
    """
    seq_len = attention_mask.shape[1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()  # (T, T)
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    return causal & keys  # (B, 1, T, T)

