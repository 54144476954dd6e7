"""Positional encodings (notebook 03): sinusoidal (Vaswani et al. 2017) and RoPE.

RoPE here uses the *rotate-half* layout of Llama models (SmolLM2 included): the head
dimension is split into two halves ``[x1, x2]`` and pair ``i`` is ``(x1[i], x2[i])``,
rotated by the angle ``position * base ** (-2i / d)``.
"""

from __future__ import annotations

import torch


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def sinusoidal_encoding(seq_len: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed sinusoidal positional encoding, shape ``(seq_len, d_model)``.

    ``PE[p, 2i] = sin(p / base^(2i/d_model))`` and ``PE[p, 2i+1] = cos(p / base^(2i/d_model))``.
    ``d_model`` must be even (sin/cos come in pairs).
    """
    _check_positive_int("seq_len", seq_len)
    _check_positive_int("d_model", d_model)
    if d_model % 2:
        raise ValueError(f"d_model must be even (sin/cos pairs), got {d_model}")
    positions = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,)
    angles = positions / base ** (two_i / d_model)  # (T, d/2)
    encoding = torch.empty(seq_len, d_model, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(angles)
    encoding[:, 1::2] = torch.cos(angles)
    return encoding.to(torch.float32)


def rope_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Inverse frequencies ``base ** (-2i / head_dim)`` for i in [0, head_dim/2), shape (d/2,)."""
    _check_positive_int("head_dim", head_dim)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
    # Same expression (int64 arange -> float) as transformers' default rope init, so the
    # frequencies match Llama models bit for bit.
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension (the Llama RoPE layout)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate queries or keys by their positions (rotary position embedding).

    x: ``(..., T, head_dim)`` (e.g. ``(B, H, T, d)``); positions: ``(T,)`` or ``(B, T)`` integer
    positions, broadcast against x's leading dims (``(B, T)`` aligns with a ``(B, H, T, d)``
    x by inserting the head axis). Returns a tensor of x's shape and dtype; norms of each
    (x1[i], x2[i]) pair are preserved, and ``apply_rope(q, m)·apply_rope(k, n)`` depends on
    m - n only.
    """
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., T, head_dim), got {tuple(x.shape)}")
    seq_len, head_dim = x.shape[-2], x.shape[-1]
    positions = torch.as_tensor(positions, device=x.device)
    if positions.dim() == 0 or positions.shape[-1] != seq_len:
        raise ValueError(
            f"positions must end in T={seq_len} (x has shape {tuple(x.shape)}), "
            f"got shape {tuple(positions.shape)}"
        )
    inv_freq = rope_frequencies(head_dim, base).to(x.device)  # (d/2,)
    angles = positions.float().unsqueeze(-1) * inv_freq  # (..., T, d/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., T, d): rotate-half layout
    if positions.dim() == 2 and x.dim() == 4:  # (B, T) against (B, H, T, d)
        angles = angles.unsqueeze(1)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return x * cos + rotate_half(x) * sin
