"""Notebook 10's checkers fail typical wrong answers with a specific diagnosis; the references pass."""

from __future__ import annotations

import math

import pytest
import torch
from mutation import Mutant, run_mutant, run_reference

from course_utils.exercises.nb10 import _tiled_variant
from course_utils.solutions import nb10 as solutions

MODULE = "nb10"


def _no_rescale_acc(m, s, acc, scores, values):
    new_m, new_s, _ = solutions.online_softmax_update(m, s, acc, scores, values)
    return new_m, new_s, acc + torch.exp(scores - new_m) @ values


def _no_rescale_sum(m, s, acc, scores, values):
    new_m, _, new_acc = solutions.online_softmax_update(m, s, acc, scores, values)
    return new_m, s + torch.exp(scores - new_m).sum(-1, keepdim=True), new_acc


def _no_max(m, s, acc, scores, values):
    new_m = torch.maximum(m, scores.max(-1, keepdim=True).values)
    probs = torch.exp(scores)
    return new_m, torch.exp(m) * s + probs.sum(-1, keepdim=True), torch.exp(m) * acc + probs @ values


def _squeezed(m, s, a, sc, v):
    return tuple(t.squeeze(-1) for t in solutions.online_softmax_update(m, s, a, sc, v))


def _variant(**change):
    def tiled(q, k, v, causal=False, block_q=64, block_k=64):
        return _tiled_variant(q, k, v, causal, block_q, block_k, **change)
    return tiled


def _exp_before_max(q, k, v, causal=False, block_q=64, block_k=64):
    """exp(s - old max), the max updated afterwards: the first tile subtracts -inf."""
    b, h, n_q, d = q.shape
    out = torch.empty(b, h, n_q, v.shape[-1])
    for qs in range(0, n_q, block_q):
        qe = min(qs + block_q, n_q)
        m = torch.full((b, h, qe - qs, 1), -math.inf)
        total, acc = torch.zeros(b, h, qe - qs, 1), torch.zeros(b, h, qe - qs, v.shape[-1])
        last = qe if causal else k.shape[-2]
        for ks in range(0, last, block_k):
            ke = min(ks + block_k, last)
            sc = q[:, :, qs:qe] @ k[:, :, ks:ke].transpose(-2, -1) / math.sqrt(d)
            if causal:
                sc = sc.masked_fill(torch.arange(ks, ke)[None] > torch.arange(qs, qe)[:, None], -math.inf)
            p = torch.exp(sc - m)
            new_m = torch.maximum(m, sc.amax(-1, keepdim=True))
            c = torch.exp(m - new_m)
            total, acc, m = c * total + p.sum(-1, keepdim=True), c * acc + p @ v[:, :, ks:ke], new_m
        out[:, :, qs:qe] = acc / total
    return out


def _full_matrix(q, k, v, causal=False, block_q=64, block_k=64):
    """Right values, but through the whole (B, H, n, n) score matrix."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
    return torch.softmax(scores, -1) @ v


MUTANTS = [
    Mutant("check_score_matrix_bytes", "linear in n", lambda b, h, n, w: b * h * n * w, expect="n²"),
    Mutant("check_score_matrix_bytes", "bits", lambda b, h, n, w: 8 * b * h * n * n * w, expect="bits"),
    Mutant("check_score_matrix_bytes", "one head", lambda b, h, n, w: n * n * w, expect="batch and heads"),
    Mutant("check_online_softmax_update", "acc not rescaled", _no_rescale_acc, expect="new_acc forgot to rescale"),
    Mutant("check_online_softmax_update", "sum not rescaled", _no_rescale_sum, expect="new_sum forgot to rescale"),
    Mutant("check_online_softmax_update", "no max subtraction", _no_max, expect="overflowed"),
    Mutant("check_online_softmax_update", "keepdim dropped", _squeezed, expect="keepdim"),
    Mutant("check_tiled_attention", "running sum not rescaled", _variant(rescale_sum=False), expect="running sum is not rescaled"),
    Mutant("check_tiled_attention", "output not rescaled", _variant(rescale_acc=False), expect="accumulated output is not rescaled"),
    Mutant("check_tiled_attention", "exp before the max update", _exp_before_max, expect="inf/NaN"),
    Mutant("check_tiled_attention", "causal tiles not masked", _variant(mask=False), expect="causal mask is missing"),
    Mutant("check_tiled_attention", "causal mask in tile coordinates", _variant(local_mask=True), expect="positions inside the tile"),
    Mutant("check_tiled_attention", "divided per tile", _variant(per_tile=True), expect="normalised by its own sum"),
    Mutant("check_tiled_attention", "no 1/sqrt(d)", _variant(scale=False), expect="1/√d"),
    Mutant("check_tiled_attention", "full score matrix", _full_matrix, expect="memory grows like n²"),
]
REFERENCES = {
    "check_score_matrix_bytes": solutions.score_matrix_bytes,
    "check_online_softmax_update": solutions.online_softmax_update,
    "check_tiled_attention": solutions.tiled_attention,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])
