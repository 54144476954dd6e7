"""Checkers for notebook 08b's exercise."""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb08b as solutions


def check_top_p_filter(top_p_filter: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """``top_p_filter(logits (B, V), top_p)`` -> logits with the tokens outside the nucleus at -inf."""
    generator = torch.Generator().manual_seed(0)
    peaked = torch.tensor([[4.0, 2.0, 1.0, 0.5, 0.0, -1.0]])  # top token alone holds > 0.5
    cases = [((torch.randn(3, 50, generator=generator) * 2, 0.9), {}),
             ((torch.randn(2, 20, generator=generator), 0.5), {}),
             ((peaked, 0.5), {}),
             ((peaked, 1.0), {})]

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return f"returned {shape}, expected a tensor of shape {tuple(expected.shape)}"
        kept, want = torch.isfinite(got), torch.isfinite(expected)
        if torch.equal(kept, want):
            if torch.allclose(got[kept], expected[want]):
                return None
            return "the right tokens are kept, but their logits changed: only set the others to -inf"
        logits, top_p = args
        if (got.softmax(-1) - logits.softmax(-1)).abs().max() < 1e-6 and torch.isfinite(got).all():
            return "nothing was removed: removed entries must become -inf (masked_fill)"
        if (kept.sum(-1) == want.sum(-1) - 1).all():
            return ("one token short: keep the token that makes the sum cross top_p too "
                    "(the nucleus is the smallest set whose mass reaches top_p)")
        if (kept.sum(-1) == 0).any():
            return "a row lost every token: the most probable token must always stay"
        if not (kept.sum(-1) == want.sum(-1)).all():
            return f"kept {kept.sum(-1).tolist()} tokens per row, expected {want.sum(-1).tolist()}"
        return "the kept tokens are not the most probable ones: sort by probability first"

    return run_check("top_p_filter", top_p_filter, solutions.top_p_filter, cases, diagnose,
                     hint="sort, softmax, cumsum; drop what lies entirely outside top_p; keep the top token")
