"""Checkers for notebook 08b's exercise: top-p (nucleus) filtering.

The expected output is transformers' own ``TopPLogitsWarper`` (what ``model.generate``
applies), on random logits, hand-made edge cases and, from the notebook, SmolLM2's real
next-token logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_utils.exercises import CheckResult
from course_utils.exercises.nb08 import _run_piece
from course_utils.solutions import nb08b as solutions


def _warper(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    from transformers.generation.logits_process import TopPLogitsWarper

    return TopPLogitsWarper(top_p)(torch.zeros(logits.shape[0], 0, dtype=torch.long), logits.clone())


def check_top_p_filter(top_p_filter: Callable[[torch.Tensor, float], torch.Tensor],
                       logits: torch.Tensor | None = None, top_p: float = 0.9,
                       verbose: bool = True) -> CheckResult:
    """``top_p_filter(logits (B, V), top_p)`` equals ``TopPLogitsWarper(top_p)``: the same
    tokens set to -inf, the kept logits unchanged (≤ 1e-6). ``logits``: real model logits
    ``(B, V)`` added as a last case at ``top_p``."""
    generator = torch.Generator().manual_seed(0)
    peaked = torch.tensor([[4.0, 2.0, 1.0, 0.5, 0.0, -1.0]])  # the top token alone holds > 0.5
    cases = [((torch.randn(3, 50, generator=generator) * 2, 0.9), {}),
             ((torch.randn(2, 20, generator=generator), 0.5), {}),
             ((peaked, 0.5), {}),
             ((peaked, 1.0), {})]
    if logits is not None:
        cases.append(((logits.detach().float().reshape(-1, logits.shape[-1]), float(top_p)), {}))

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return f"returned {shape}, expected a tensor of shape {tuple(expected.shape)}"
        kept, want = torch.isfinite(got), torch.isfinite(expected)
        if torch.equal(kept, want):
            if torch.allclose(got[kept], expected[want], atol=1e-6, rtol=0):
                return None
            return "the right tokens are kept, but their logits changed: only set the others to -inf"
        logits_, _ = args
        if torch.isfinite(got).all() and (got.softmax(-1) - logits_.softmax(-1)).abs().max() < 1e-6:
            return "nothing was removed: removed entries must become -inf (masked_fill)"
        if (kept.sum(-1) == 0).any():
            return "a row lost every token: the most probable token must always stay"
        if (kept.sum(-1) == want.sum(-1) - 1).all():
            return ("one token short: keep the token that makes the sum cross top_p too "
                    "(the nucleus is the smallest set whose mass reaches top_p)")
        probs = logits_.softmax(-1)
        lowest_kept = probs.masked_fill(~kept, 2.0).amin(-1)
        highest_removed = probs.masked_fill(kept, -1.0).amax(-1)
        if (highest_removed > lowest_kept).any():
            return "the kept tokens are not the most probable ones: sort by probability first"
        if not (kept.sum(-1) == want.sum(-1)).all():
            return f"kept {kept.sum(-1).tolist()} tokens per row, expected {want.sum(-1).tolist()}"
        return "the kept tokens are not the most probable ones: sort by probability first"

    def make(fn):
        return lambda x, p: fn(x.clone(), p)

    return _run_piece("top_p_filter", top_p_filter, solutions.top_p_filter, make, _warper, cases,
                      diagnose, verbose)
