"""Reference solutions for notebook 03 (positional encoding): the sinusoidal table and RoPE.

Teaching versions, written the way the exercises ask; the course's own implementations (with
input checks, both RoPE layouts, float64 angles for float64 input) are in
``course_utils.positional``. ``apply_rope`` is the piece ``rope`` of the learner workspace.
"""

from __future__ import annotations

import torch


def sinusoidal_encoding(seq_len: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """``(seq_len, d_model)`` float32: ``PE[p, 2i] = sin(p / base^(2i/d))``, ``PE[p, 2i+1] = cos(...)``."""
    positions = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,): 0, 2, 4, ...
    angles = positions / base ** (two_i / d_model)  # (T, d/2)
    encoding = torch.zeros(seq_len, d_model, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(angles)  # even columns
    encoding[:, 1::2] = torch.cos(angles)  # odd columns
    return encoding.float()


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate ``x`` of shape ``(..., T, d)`` by ``positions`` ``(T,)`` in the rotate-half layout.

    Pair i is ``(x[..., i], x[..., i + d/2])``, rotated by ``positions * base^(-2i/d)``.
    Returns x's shape.
    """
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
    angles = positions.float().unsqueeze(-1) * inv_freq  # (T, d/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, d): both halves use angle i
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    rotated_half = torch.cat((-x2, x1), dim=-1)  # rotate_half(x)
    return x * angles.cos() + rotated_half * angles.sin()
