"""Checkers for notebook 02 (embeddings): cosine similarity and mean pooling."""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb02 as solutions

TOLERANCE = 1e-5


def _cosine_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(0)
    cases = []
    for n, m, c in ((3, 4, 8), (1, 5, 16), (6, 2, 384)):
        a = torch.randn(n, c, generator=generator) * 3
        b = torch.randn(m, c, generator=generator) * 0.5 + 1
        cases.append(((a, b), {}))
    same = torch.randn(2, 4, generator=generator)
    cases.append(((same, same * 10), {}))  # scaled copies: cosine 1 on the diagonal
    return cases


def _close(got, expected) -> bool:
    return got.shape == expected.shape and torch.allclose(got, expected, atol=TOLERANCE)


def check_cosine_similarity(cosine_similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """``cosine_similarity(a (N, C), b (M, C))`` must return the ``(N, M)`` cosine matrix."""

    def diagnose(got, expected, args, kwargs):
        a, b = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if _close(got, expected):
            return None
        if got.shape == expected.T.shape and got.shape != expected.shape:
            return f"shape {tuple(got.shape)} is transposed: rows should follow a, i.e. (N, M)"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (N, M) = {tuple(expected.shape)}"
        if _close(got, a @ b.T):
            return "that is the plain dot product: divide by both vectors' norms"
        if got.abs().max() > 1 + 1e-4:
            return "a value is outside [-1, 1]: normalise each row (norm over the last axis, C)"
        return f"values differ from the reference by up to {float((got - expected).abs().max()):.3g}"

    return run_check(
        "cosine_similarity", cosine_similarity, solutions.cosine_similarity, _cosine_cases(),
        diagnose, hint="normalise the rows of a and b to length 1, then a_unit @ b_unit.T",
    )


def _pool_cases() -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(1)
    cases = []
    for lengths, total in (([3, 5], 5), ([1, 4, 2], 6), ([7], 7)):
        hidden = torch.randn(len(lengths), total, 8, generator=generator)
        mask = torch.zeros(len(lengths), total, dtype=torch.long)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        cases.append(((hidden, mask), {}))
    return cases


def check_mean_pool(mean_pool: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> CheckResult:
    """``mean_pool(hidden (B, T, C), mask (B, T))`` must average over the real tokens only."""

    def diagnose(got, expected, args, kwargs):
        hidden, mask = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a torch.Tensor"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected (B, C) = {tuple(expected.shape)}"
        if _close(got, expected):
            return None
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if _close(got, hidden.mean(dim=1)):
            return ("you averaged over padding too: multiply by the mask and divide by the "
                    "number of real tokens")
        if _close(got, (hidden * weights).sum(dim=1) / hidden.shape[1]):
            return "padding is zeroed but you divided by T: divide by each row's mask sum"
        if _close(got, (hidden * weights).sum(dim=1)):
            return "you summed the real tokens but did not divide by their number"
        return f"values differ from the reference by up to {float((got - expected).abs().max()):.3g}"

    return run_check(
        "mean_pool", mean_pool, solutions.mean_pool, _pool_cases(), diagnose,
        hint="(hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)",
    )
