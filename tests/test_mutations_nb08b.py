"""Notebook 08b's checker catches the typical top-p slips (see mutation.py)."""

from __future__ import annotations

import pytest
import torch
from mutation import Mutant, run_mutant, run_reference

from course_utils.solutions import nb08b as solutions

MODULE = "nb08b"


def exclusive(logits, top_p):
    """Drops the token that crosses top_p (keeps only tokens strictly inside)."""
    probs, order = logits.softmax(-1).sort(descending=True)
    before = probs.cumsum(-1)
    remove = before > top_p
    remove[:, 0] = False
    return logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))


def unchanged(logits, top_p):
    return logits


def unsorted(logits, top_p):
    """Cumulates in vocabulary order, not by probability."""
    before = logits.softmax(-1).cumsum(-1) - logits.softmax(-1)
    return logits.masked_fill(before >= top_p, float("-inf"))


def log_probs(logits, top_p):
    return solutions.top_p_filter(logits, top_p).log_softmax(-1)


def may_drop_top(logits, top_p):
    """Forgets to keep the top token: a peaked row loses everything."""
    sorted_logits, order = torch.sort(logits)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    remove = cumulative <= (1 - top_p) + 1e-9
    remove = remove | (cumulative > 1 - 1e-6) & (top_p < 1)
    return logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))


MUTANTS = [
    Mutant("check_top_p_filter", "crossing token dropped", exclusive, expect="one token short"),
    Mutant("check_top_p_filter", "nothing removed", unchanged, expect="nothing was removed"),
    Mutant("check_top_p_filter", "vocabulary order", unsorted, expect="not the most probable"),
    Mutant("check_top_p_filter", "log-probabilities returned", log_probs, expect="logits changed"),
    Mutant("check_top_p_filter", "top token not protected", may_drop_top, expect="lost every token"),
]

REFERENCES = {"check_top_p_filter": solutions.top_p_filter}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])
