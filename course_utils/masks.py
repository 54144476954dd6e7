"""Used in notebooks 05, 06, 10: attention masks. Convention everywhere: boolean, **True = may attend**.

Shapes: ``causal_mask(n)`` and ``sliding_window_mask(n, w)`` are ``(n, n)`` (query, key);
``padding_mask(attention_mask)`` is ``(B, 1, 1, T)``: it broadcasts over heads and query
positions of ``(B, H, Tq, Tk)`` scores. ``combine`` ANDs masks with broadcasting.
``prefix_lm_mask(n, prefix_len)`` (``(n, n)``: a bidirectional prefix, causal after it) and
``packed_mask(segment_ids)`` (block-diagonal: several sequences packed into one row attend
only within their own segment) complete notebook 06's gallery.

Bad input raises a ``ValueError`` naming the argument (``tests/test_validation.py`` feeds
every function here random bad inputs).
"""

from __future__ import annotations

import torch


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def causal_mask(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, n)`` lower-triangular mask: query i may attend to keys 0..i."""
    _check_size("n", n)
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def sliding_window_mask(
    n: int, window: int, causal: bool = True, device: torch.device | str | None = None
) -> torch.Tensor:
    """``(n, n)`` mask letting query i see the ``window`` most recent keys (i-window+1..i).

    With ``causal=False`` the band is symmetric: keys within ``window - 1`` of i either side.
    """
    _check_size("n", n)
    _check_size("window", window)
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be True or False, got {causal!r}")
    i = torch.arange(n, device=device).unsqueeze(1)  # (n, 1) queries
    j = torch.arange(n, device=device).unsqueeze(0)  # (1, n) keys
    distance = i - j
    if causal:
        return (distance >= 0) & (distance < window)
    return distance.abs() < window


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Turn a tokenizer's ``(B, T)`` 1/0 attention_mask into a ``(B, 1, 1, T)`` key mask."""
    try:
        attention_mask = torch.as_tensor(attention_mask)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"attention_mask must be a (batch, seq_len) tensor of 1s and 0s, got "
                         f"{type(attention_mask).__name__}") from error
    if attention_mask.dim() != 2:
        raise ValueError(
            "attention_mask must have shape (batch, seq_len) as returned by a tokenizer, "
            f"got shape {tuple(attention_mask.shape)}"
        )
    if attention_mask.dtype != torch.bool:
        if attention_mask.dtype.is_complex:
            raise ValueError(f"attention_mask must hold 1s and 0s, got dtype {attention_mask.dtype}")
        bad = (attention_mask != 0) & (attention_mask != 1)
        if bad.any():
            raise ValueError(
                "attention_mask must hold only 1 (a real token) and 0 (padding), got "
                f"{attention_mask[bad].flatten()[0].item()!r}"
            )
    return attention_mask.bool()[:, None, None, :]


def combine(*masks: torch.Tensor) -> torch.Tensor:
    """Logical AND of boolean masks, broadcast together (e.g. causal & padding)."""
    if not masks:
        raise ValueError("combine() needs at least one mask")
    result = None
    for index, mask in enumerate(masks):
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise ValueError(
                f"mask {index} has dtype {mask.dtype}; masks here are boolean (True = may "
                "attend). Convert a 1/0 mask with .bool()"
            )
        try:
            result = mask if result is None else result & mask
        except RuntimeError as error:
            raise ValueError(
                f"mask {index} of shape {tuple(mask.shape)} does not broadcast with "
                f"shape {tuple(result.shape)}"
            ) from error
    return result


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask -> additive mask: 0 where allowed, the dtype's minimum where blocked.

    The dtype minimum (not -inf) keeps fully masked rows finite, as transformers does.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype (e.g. torch.float32), "
                         f"got {dtype!r}")
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise ValueError(f"expected a boolean mask, got dtype {mask.dtype}")
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill(~mask, torch.finfo(dtype).min)


def prefix_lm_mask(n: int, prefix_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, n)`` prefix-LM mask: every query sees the whole prefix, later keys causally.

    Query i may attend to key j when ``j < prefix_len`` (the prefix, e.g. a prompt, is read
    bidirectionally as by an encoder) or ``j <= i`` (the continuation is generated left to
    right). ``prefix_len = 0`` is ``causal_mask(n)``; ``prefix_len = n`` is all True.
    """
    _check_size("n", n)
    if isinstance(prefix_len, bool) or not isinstance(prefix_len, int) or not 0 <= prefix_len <= n:
        raise ValueError(f"prefix_len must be an integer in 0..n={n}, got {prefix_len!r}")
    i = torch.arange(n, device=device).unsqueeze(1)  # (n, 1) queries
    j = torch.arange(n, device=device).unsqueeze(0)  # (1, n) keys
    return (j <= i) | (j < prefix_len)


def packed_mask(segment_ids: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Block-diagonal mask for sequences packed into one row: attend only within a segment.

    ``segment_ids``: ``(T,)`` or ``(B, T)`` integers, equal for the tokens of one packed
    sequence (e.g. ``[0, 0, 0, 1, 1, 2, 2, 2]``). Returns ``(T, T)`` or ``(B, 1, T, T)``
    boolean (True = may attend): query i may see key j when both carry the same id and, with
    ``causal=True`` (decoder training on packed documents), ``j <= i``.
    """
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be True or False, got {causal!r}")
    try:
        segment_ids = torch.as_tensor(segment_ids)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"segment_ids must be a (T,) or (B, T) tensor of integers, got "
                         f"{type(segment_ids).__name__}") from error
    if segment_ids.dim() not in (1, 2) or segment_ids.shape[-1] == 0:
        raise ValueError(f"segment_ids must have shape (T,) or (B, T) with T >= 1, got shape "
                         f"{tuple(segment_ids.shape)}")
    if segment_ids.dtype.is_floating_point or segment_ids.dtype.is_complex or segment_ids.dtype == torch.bool:
        raise ValueError(f"segment_ids must hold integers (one id per packed sequence), got dtype "
                         f"{segment_ids.dtype}")
    same = segment_ids.unsqueeze(-1) == segment_ids.unsqueeze(-2)  # (..., T, T): same segment
    if causal:
        same = same & causal_mask(segment_ids.shape[-1], device=segment_ids.device)
    return same if segment_ids.dim() == 1 else same[:, None]  # (T, T) or (B, 1, T, T)
