"""Checkers for notebook 06 (masks)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb06 as solutions

_PADDING_CASES = [
    [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]],
    [[1, 1, 0]],
    [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]],
]


def check_causal_padding_mask(
    causal_padding_mask: Callable[[torch.Tensor], torch.Tensor],
) -> CheckResult:
    """``causal_padding_mask(attention_mask)``: (B, T) 1/0 -> boolean (B, 1, T, T)."""

    def diagnose(got, expected, args, kwargs):
        (attention_mask,) = args
        batch, seq_len = attention_mask.shape
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if got.dtype != torch.bool:
            return f"dtype {got.dtype}: return a boolean mask (True = may attend)"
        if tuple(got.shape) == (batch, seq_len, seq_len):
            return ("shape (B, T, T) has no head axis: against (B, H, T, T) scores it would "
                    "broadcast the batch over the heads; add it with [:, None]")
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (B, 1, T, T) = {tuple(expected.shape)}"
        if torch.equal(got, expected):
            return None
        future = ~torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
        if got[..., future].any():
            return "a query may attend to a later key: the causal part (tril) is missing"
        if got[..., ~attention_mask.bool()[:, None, None, :].expand_as(got)].any():
            return "a query may attend to a padding key: AND with attention_mask along the keys"
        return "some allowed (causal, non-padding) positions are blocked"

    cases = [((torch.tensor(rows),), {}) for rows in _PADDING_CASES]
    return run_check(
        "causal_padding_mask", causal_padding_mask, solutions.causal_padding_mask, cases,
        diagnose,
        hint="torch.ones(T, T, dtype=torch.bool).tril() & attention_mask.bool()[:, None, None, :]",
    )


def check_sliding_window(sliding_window: Callable[[int, int], torch.Tensor]) -> CheckResult:
    """``sliding_window(n, window)``: boolean (n, n), query i sees keys i-window+1 .. i."""

    def diagnose(got, expected, args, kwargs):
        n, window = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if got.dtype != torch.bool:
            return f"dtype {got.dtype}: return a boolean mask (True = may attend)"
        if tuple(got.shape) != (n, n):
            return f"shape {tuple(got.shape)}, expected ({n}, {n})"
        if torch.equal(got, expected):
            return None
        if got.triu(diagonal=1).any():
            return "a query may attend to a later key: the window must be causal (j <= i)"
        per_row = int(got[-1].sum())
        if per_row != min(window, n):
            return (f"the last query sees {per_row} keys, expected window = {window} "
                    "(itself included): an off-by-one in the lower edge?")
        return f"wrong pattern for n={n}, window={window}"

    cases = [((n, w), {}) for n, w in ((6, 3), (8, 1), (5, 5), (7, 2), (4, 9))]
    return run_check(
        "sliding_window", sliding_window, solutions.sliding_window, cases, diagnose,
        hint="i = arange(n)[:, None]; j = arange(n)[None, :]; (j <= i) & (j > i - window)",
    )
