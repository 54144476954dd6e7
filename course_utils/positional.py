"""Positional encodings: sinusoidal (Vaswani et al. 2017) and RoPE (Su et al., RoFormer).

Used in notebooks 03 and 05, and through ``course_utils.attention`` / ``blocks`` in later ones.

RoPE comes in two memory layouts of the same rotation:

- ``apply_rope``: the *rotate-half* layout of Hugging Face's Llama (SmolLM2 included) and
  GPT-NeoX: the head dimension is split into halves ``[x1, x2]`` and pair ``i`` is
  ``(x1[i], x2[i]) = (x[i], x[i + d/2])``;
- ``apply_rope_adjacent_pairs``: the layout of the RoFormer paper, Meta's Llama reference
  code (``view_as_complex`` on ``(..., d/2, 2)``), GPT-J and llama.cpp's GGUF files: pair
  ``i`` is ``(x[2i], x[2i + 1])``.

Pair ``i`` is rotated by the angle ``position * base ** (-2i / d)`` in both. They are the
same rotation up to a fixed permutation of the head dimensions, ``rope_adjacent_permutation``
(which is why Llama checkpoints converted between the layouts have their W_Q / W_K rows
permuted: transformers undoes llama.cpp's permutation when it loads a GGUF).

Every public function refuses bad input with a ``ValueError`` whose message starts with the
function's name and names the argument: ``"apply_rope: x must be …, got …"``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "sinusoidal_encoding", "rope_frequencies", "rope_wavelengths", "rotate_half",
    "apply_rope", "apply_rope_adjacent_pairs", "rope_adjacent_permutation",
]


def _fail(function: str, message: str) -> ValueError:
    return ValueError(f"{function}: {message}")


def _positive_int(function: str, name: str, value: object, *, even: bool = False) -> int:
    kind = "a positive even integer" if even else "a positive integer"
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(function, f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if even and value % 2:
        raise _fail(function, f"{name} must be even (the dimensions come in pairs), got {value}")
    return value


def _base(function: str, base: object) -> float:
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not math.isfinite(base) \
            or base <= 1:
        raise _fail(function, f"base must be a finite number > 1 (e.g. 10000.0), got {base!r}")
    return float(base)


def sinusoidal_encoding(seq_len: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed sinusoidal positional encoding, shape ``(seq_len, d_model)``, float32.

    ``PE[p, 2i] = sin(p / base^(2i/d_model))`` and ``PE[p, 2i+1] = cos(p / base^(2i/d_model))``
    (computed in float64, then rounded). ``seq_len`` ≥ 1, ``d_model`` even ≥ 2, ``base`` > 1.
    """
    _positive_int("sinusoidal_encoding", "seq_len", seq_len)
    _positive_int("sinusoidal_encoding", "d_model", d_model, even=True)
    base = _base("sinusoidal_encoding", base)
    positions = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (d/2,)
    angles = positions / base ** (two_i / d_model)  # (T, d/2)
    encoding = torch.empty(seq_len, d_model, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(angles)
    encoding[:, 1::2] = torch.cos(angles)
    return encoding.to(torch.float32)


def rope_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Angular frequencies ``base ** (-2i / head_dim)`` for i in [0, head_dim/2): ``(d/2,)``.

    Float32, by the same expression (int64 arange -> float) as transformers' default RoPE
    init, so they match Llama models bit for bit.
    """
    _positive_int("rope_frequencies", "head_dim", head_dim, even=True)
    base = _base("rope_frequencies", base)
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_wavelengths(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Wavelength in positions of each RoPE pair, ``2π · base^(2i/d)``: ``(d/2,)``, float64.

    Pair ``i`` turns once every ``wavelength[i]`` positions; the first pair turns fastest
    (wavelength 2π), the last slowest (just under ``2π · base``).
    """
    _positive_int("rope_wavelengths", "head_dim", head_dim, even=True)
    base = _base("rope_wavelengths", base)
    return 2 * math.pi * base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def _check_x(function: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise _fail(function, f"x must be a torch.Tensor of shape (..., T, head_dim), "
                              f"e.g. (B, H, T, d_head), got {type(x).__name__}")
    if x.dim() < 2:
        raise _fail(function, f"x must have shape (..., T, head_dim) (at least 2 dimensions, "
                              f"e.g. (B, H, T, d_head)), got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise _fail(function, f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[-1] == 0 or x.shape[-1] % 2:
        raise _fail(function, f"x's last dimension (head_dim) must be even and > 0 (RoPE rotates "
                              f"pairs), got shape {tuple(x.shape)}")
    return x


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension (the rotate-half RoPE layout).

    x: ``(..., d)`` with d even; returns the same shape.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise _fail("rotate_half", f"x must be a torch.Tensor of shape (..., d), got "
                                   f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[-1] % 2:
        raise _fail("rotate_half", f"x's last dimension must be even, got shape {tuple(x.shape)}")
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope_angles(function: str, x: torch.Tensor, positions: object, base: object) -> torch.Tensor:
    """Angles ``positions ⊗ base^(-2i/d)`` shaped to broadcast against x: ``(..., T, d/2)``.

    Float32 (exactly transformers' arithmetic) for float32/16 inputs, float64 for float64.
    """
    base = _base(function, base)
    seq_len, head_dim = x.shape[-2], x.shape[-1]
    if isinstance(positions, torch.Tensor):
        positions = positions.to(x.device)
    else:
        try:
            positions = torch.as_tensor(positions, device=x.device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise _fail(function, f"positions must be integer positions of shape (T,) or (B, T), "
                                  f"got {type(positions).__name__}") from error
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise _fail(function, f"positions must hold integers (token positions), got dtype {positions.dtype}")
    if positions.dim() not in (1, 2) or positions.shape[-1] != seq_len:
        raise _fail(function, f"positions must have shape (T,) or (B, T) and end in T={seq_len} "
                              f"(x has shape {tuple(x.shape)}), got shape {tuple(positions.shape)}")
    if positions.numel() and int(positions.min()) < 0:
        raise _fail(function, f"positions must be ≥ 0, got min {int(positions.min())}")
    if x.dtype == torch.float64:
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=x.device) / head_dim)
        angles = positions.double().unsqueeze(-1) * inv_freq  # (..., T, d/2)
    else:
        inv_freq = rope_frequencies(head_dim, base).to(x.device)  # (d/2,)
        angles = positions.float().unsqueeze(-1) * inv_freq  # (..., T, d/2)
    if positions.dim() == 2 and x.dim() == 4:  # (B, T) against (B, H, T, d): head axis
        angles = angles.unsqueeze(1)
    try:
        torch.broadcast_shapes(angles.shape[:-1], x.shape[:-1])
    except RuntimeError as error:
        raise _fail(function, f"positions of shape {tuple(positions.shape)} do not broadcast "
                              f"against x of shape {tuple(x.shape)} (batch sizes differ)") from error
    return angles


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate queries or keys by their positions (RoPE), in the rotate-half layout.

    x: ``(..., T, head_dim)`` floating point (e.g. ``(B, H, T, d)``), head_dim even;
    positions: ``(T,)`` or ``(B, T)`` non-negative integers, broadcast against x's leading
    dims (``(B, T)`` aligns with a ``(B, H, T, d)`` x by inserting the head axis); base > 1.
    Returns a tensor of x's shape and dtype. Pair ``(x[i], x[i + d/2])`` is rotated by
    ``position · base^(-2i/d)``, so norms are preserved and ``apply_rope(q, m)·apply_rope(k, n)``
    depends on ``m - n`` only. Angles are float32 for float32/16 inputs (bit for bit what
    transformers' Llama computes) and float64 for float64 inputs.
    """
    x = _check_x("apply_rope", x)
    angles = _rope_angles("apply_rope", x, positions, base)  # (..., T, d/2)
    angles = torch.cat((angles, angles), dim=-1)  # (..., T, d): rotate-half layout
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return x * cos + rotate_half(x) * sin


def apply_rope_adjacent_pairs(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE in the adjacent-pair layout (RoFormer, Meta's Llama code, GPT-J, GGUF files).

    Same arguments and checks as ``apply_rope``; pair ``i`` is ``(x[2i], x[2i + 1])``, rotated
    by ``position · base^(-2i/d)``. For every x:
    ``apply_rope_adjacent_pairs(x[..., perm]) == apply_rope(x)[..., perm]`` with
    ``perm = rope_adjacent_permutation(d)``.
    """
    x = _check_x("apply_rope_adjacent_pairs", x)
    angles = _rope_angles("apply_rope_adjacent_pairs", x, positions, base)  # (..., T, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]  # (..., T, d/2) each: the two members of pair i
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (..., T, d/2, 2)
    return rotated.flatten(-2)  # (..., T, d): back to x[2i], x[2i+1] order


def rope_adjacent_permutation(head_dim: int) -> torch.Tensor:
    """Indices ``perm`` (``(head_dim,)``, int64) taking rotate-half order to adjacent pairs.

    ``x[..., perm]`` puts ``x[i]`` at ``2i`` and ``x[i + d/2]`` at ``2i + 1``:
    ``perm = [0, d/2, 1, d/2 + 1, …]``. Applied to the rows of each head of W_Q and W_K, it
    is the permutation llama.cpp applies when it writes a Hugging Face Llama to GGUF.
    """
    _positive_int("rope_adjacent_permutation", "head_dim", head_dim, even=True)
    half = head_dim // 2
    return torch.stack((torch.arange(half), torch.arange(half) + half), dim=1).flatten()
