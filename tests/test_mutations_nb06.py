"""Mutation tests for notebook 06's checkers: typical wrong masks fail with a specific diagnosis."""

from __future__ import annotations

import pytest
import torch
from mutation import Mutant, run_mutant, run_reference

from course_utils.solutions import nb06 as solutions

pytestmark = pytest.mark.slow  # the causal and padding checks load SmolLM2 and MiniLM

MODULE = "nb06"


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n)[:, None], torch.arange(n)[None, :]  # queries i, keys j


def _window(rule):
    def mask(n, window):
        i, j = _grid(n)
        return rule(i, j, window)

    return mask


def _causal_padding(attention_mask, causal=True, padding=True):
    b, t = attention_mask.shape
    mask = torch.ones(b, 1, t, t, dtype=torch.bool)
    if causal:
        mask = mask & torch.ones(t, t, dtype=torch.bool).tril()
    if padding:
        mask = mask & attention_mask.bool()[:, None, None, :]
    return mask


MUTANTS = [
    # causal_mask
    Mutant("check_causal_mask", "polarity inverted", lambda n: ~solutions.causal_mask(n), expect="inverted"),
    Mutant("check_causal_mask", "strict triangle (diagonal blocked)",
           lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1), expect="the diagonal is blocked"),
    Mutant("check_causal_mask", "upper triangle", lambda n: torch.ones(n, n, dtype=torch.bool).triu(),
           expect="transposed"),
    Mutant("check_causal_mask", "diagonal off by one (sees the next token)",
           lambda n: torch.ones(n, n, dtype=torch.bool).tril(1), expect="key i + 1"),
    Mutant("check_causal_mask", "1/0 floats", lambda n: torch.ones(n, n).tril(), expect="return a boolean mask"),
    # padding_mask
    Mutant("check_padding_mask", "(B, 1, T, 1): masks query rows", lambda am: am.bool()[:, None, :, None],
           expect="masks query *rows*"),
    Mutant("check_padding_mask", "(B, T): no broadcast axes", lambda am: am.bool(), expect="no axes for the heads"),
    Mutant("check_padding_mask", "(B, 1, T): no head axis", lambda am: am.bool()[:, None, :],
           expect="no head axis"),
    Mutant("check_padding_mask", "polarity inverted", lambda am: ~am.bool()[:, None, None, :], expect="inverted"),
    Mutant("check_padding_mask", "1/0 integers", lambda am: am[:, None, None, :], expect="return a boolean mask"),
    # sliding_window_mask
    Mutant("check_sliding_window_mask", "window + 1 keys", _window(lambda i, j, w: (j <= i) & (j >= i - w)),
           expect="off by one"),
    Mutant("check_sliding_window_mask", "window - 1 keys", _window(lambda i, j, w: (j <= i) & (j > i - w + 1)),
           expect="off by one"),
    Mutant("check_sliding_window_mask", "symmetric band", _window(lambda i, j, w: (i - j).abs() < w),
           expect="later key"),
    Mutant("check_sliding_window_mask", "polarity inverted", _window(lambda i, j, w: ~((j <= i) & (j > i - w))),
           expect="inverted"),
    Mutant("check_sliding_window_mask", "1/0 integers", _window(lambda i, j, w: ((j <= i) & (j > i - w)).long()),
           expect="return a boolean mask"),
    # causal_padding_mask
    Mutant("check_causal_padding_mask", "no head axis", lambda am: _causal_padding(am)[:, 0], expect="head axis"),
    Mutant("check_causal_padding_mask", "causal part missing", lambda am: _causal_padding(am, causal=False),
           expect="later key"),
    Mutant("check_causal_padding_mask", "padding part missing", lambda am: _causal_padding(am, padding=False),
           expect="padding key"),
    Mutant("check_causal_padding_mask", "1/0 integers", lambda am: _causal_padding(am).long(), expect="boolean"),
]

REFERENCES = {
    "check_causal_mask": solutions.causal_mask,
    "check_padding_mask": solutions.padding_mask,
    "check_sliding_window_mask": solutions.sliding_window_mask,
    "check_causal_padding_mask": solutions.causal_padding_mask,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])
