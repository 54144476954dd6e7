"""Typical wrong answers to notebook 14's exercise fail with a specific diagnosis."""

from __future__ import annotations

import pytest
import torch
from mutation import Mutant, run_mutant, run_reference

from course_utils.solutions import nb14 as solutions

MODULE = "nb14"


def interleaved(z, w_o, readout):
    n_heads, d_head = z.shape
    return torch.einsum("cdh,hd->hc", w_o.reshape(w_o.shape[0], d_head, n_heads), z) @ readout


def equal_shares(z, w_o, readout):
    total = (w_o @ z.reshape(-1)) @ readout
    return torch.full((z.shape[0],), float(total) / z.shape[0])


def all_heads_summed(z, w_o, readout):
    return (w_o @ z.reshape(-1)) @ readout  # a scalar: the layer's total


def no_readout_scale(z, w_o, readout):
    return solutions.head_logit_contributions(z, w_o, readout / readout.norm())


MUTANTS = [
    Mutant("check_head_logit_contributions", "w_o columns read interleaved", interleaved, expect="head by head"),
    Mutant("check_head_logit_contributions", "the layer total shared equally", equal_shares, expect="same share"),
    Mutant("check_head_logit_contributions", "one number for the layer", all_heads_summed, expect="one number per head"),
    Mutant("check_head_logit_contributions", "readout normalised", no_readout_scale, expect="values differ"),
]
REFERENCES = {"check_head_logit_contributions": solutions.head_logit_contributions}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])
