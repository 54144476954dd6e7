"""Mutation tests for notebook 04's checkers: typical wrong attention code fails, specifically."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch.nn.functional as F
from mutation import Mutant, run_mutant, run_reference

from course_utils.solutions import nb04 as solutions

pytestmark = pytest.mark.slow  # check_self_attention loads MiniLM

MODULE = "nb04"


# --- softmax ---------------------------------------------------------------------------------
def softmax_no_max_subtraction(x):
    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


def softmax_first_axis(x):
    e = np.exp(x - x.max())
    return e / e.sum(0, keepdims=True)


def softmax_without_exp(x):
    shifted = x - x.min(-1, keepdims=True) + 1e-3
    return shifted / shifted.sum(-1, keepdims=True)


def softmax_unnormalised(x):
    return np.exp(x - x.max(-1, keepdims=True))


# --- attention (NumPy) -----------------------------------------------------------------------
def attention_no_sqrt(q, k, v):
    return solutions.softmax(q @ k.T) @ v


def attention_divided_by_d(q, k, v):
    return solutions.softmax(q @ k.T / q.shape[-1]) @ v


def attention_returns_weights(q, k, v):
    return solutions.softmax(q @ k.T / np.sqrt(q.shape[-1]))


def attention_no_softmax(q, k, v):
    return (q @ k.T / np.sqrt(q.shape[-1])) @ v


def attention_softmax_over_queries(q, k, v):
    scores = q @ k.T / np.sqrt(q.shape[-1])
    return (np.exp(scores) / np.exp(scores).sum(0, keepdims=True)) @ v


# --- antecedent_attention --------------------------------------------------------------------
def antecedent_transposed(maps, query, key):
    return solutions.antecedent_attention(maps, key, query)


def antecedent_flat_index(maps, query, key):
    weights = maps[:, :, query, key]
    return int(weights.argmax()), 0, float(weights.max())


def antecedent_no_weight(maps, query, key):
    return solutions.antecedent_attention(maps, query, key)[:2]


# --- SelfAttention ---------------------------------------------------------------------------
class _Slip(solutions.SelfAttention):
    scale, axis, mask_mode, split, merge, out_proj = "sqrt", -1, "before", "transpose", "transpose", True

    def forward(self, x, mask=None):
        B, T, C = x.shape

        def heads(t):
            if self.split == "view":
                return t.reshape(B, self.n_heads, T, self.head_dim)
            return t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-2, -1) / {"sqrt": math.sqrt(self.head_dim), "none": 1.0, "d": self.head_dim}[self.scale]
        if mask is not None and self.mask_mode == "before":
            scores = scores.masked_fill(~mask, float("-inf"))
        if mask is not None and self.mask_mode == "inverted":
            scores = scores.masked_fill(mask, float("-inf"))
        weights = F.softmax(scores, dim=self.axis)
        if mask is not None and self.mask_mode == "after":
            weights = weights.masked_fill(~mask, 0.0)
        context = weights @ v
        context = context.reshape(B, T, C) if self.merge == "view" else context.transpose(1, 2).reshape(B, T, C)
        return self.out(context) if self.out_proj else context


def _slip(name, **attributes):
    return type(name, (_Slip,), attributes)


MUTANTS = [
    Mutant("check_softmax", "no max subtraction", softmax_no_max_subtraction, expect="overflows"),
    Mutant("check_softmax", "normalised over the first axis", softmax_first_axis, expect="last axis"),
    Mutant("check_softmax", "no exponential", softmax_without_exp, expect="exp(x) / σ exp(x)"),
    Mutant("check_softmax", "not normalised", softmax_unnormalised, expect="divide each row by its own sum"),
    Mutant("check_attention", "no √d", attention_no_sqrt, expect="forgot to divide the scores by √d"),
    Mutant("check_attention", "divided by d", attention_divided_by_d, expect="divided by d"),
    Mutant("check_attention", "returns the weights", attention_returns_weights, expect="that's the weights"),
    Mutant("check_attention", "no softmax", attention_no_softmax, expect="no softmax"),
    Mutant("check_attention", "softmax over the queries", attention_softmax_over_queries, expect="wrong axis"),
    Mutant("check_antecedent_attention", "rows and columns swapped", antecedent_transposed, expect="rows are queries"),
    Mutant("check_antecedent_attention", "flat argmax", antecedent_flat_index, expect="unravel_index"),
    Mutant("check_antecedent_attention", "weight missing", antecedent_no_weight, expect="(layer, head, weight) tuple"),
    Mutant("check_self_attention", "no √d", _slip("NoSqrt", scale="none"), expect="not divided by √d_head"),
    Mutant("check_self_attention", "divided by d", _slip("ByD", scale="d"), expect="divided by d_head"),
    Mutant("check_self_attention", "softmax over the queries", _slip("WrongAxis", axis=-2), expect="wrong axis"),
    Mutant("check_self_attention", "mask after softmax", _slip("MaskAfter", mask_mode="after"), expect="after the softmax"),
    Mutant("check_self_attention", "mask polarity inverted", _slip("Inverted", mask_mode="inverted"), expect="polarity"),
    Mutant("check_self_attention", "mask ignored", _slip("Unmasked", mask_mode="ignored"), expect="mask is ignored"),
    Mutant("check_self_attention", "heads split without transpose", _slip("BadSplit", split="view"), expect="split wrongly"),
    Mutant("check_self_attention", "heads merged without transpose", _slip("BadMerge", merge="view"), expect="merged back wrongly"),
    Mutant("check_self_attention", "no output projection", _slip("NoOut", out_proj=False), expect="output projection is missing"),
]
REFERENCES = {
    "check_softmax": solutions.softmax,
    "check_attention": solutions.attention,
    "check_antecedent_attention": solutions.antecedent_attention,
    "check_self_attention": solutions.SelfAttention,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])
