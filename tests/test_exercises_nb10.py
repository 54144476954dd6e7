"""Notebook 10's checkers pass the references and diagnose typical mistakes in words."""

from __future__ import annotations

import torch

from course_utils.exercises.nb10 import check_online_softmax_update, check_score_matrix_bytes
from course_utils.solutions.nb10 import online_softmax_update, score_matrix_bytes


def test_score_matrix_bytes_reference_passes_and_equals_bench():
    from course_utils import bench

    assert check_score_matrix_bytes(score_matrix_bytes).passed
    assert score_matrix_bytes(1, 8, 4096, 4) == bench.score_matrix_bytes(1, 8, 4096) == 2**29


def test_score_matrix_bytes_mistakes_are_named():
    linear = check_score_matrix_bytes(lambda b, h, n, w: b * h * n * w)
    assert not linear.passed and "n²" in linear.message
    bits = check_score_matrix_bytes(lambda b, h, n, w: 8 * b * h * n * n * w)
    assert not bits.passed and "bits" in bits.message
    one_head = check_score_matrix_bytes(lambda b, h, n, w: n * n * w)
    assert not one_head.passed and "batch and heads" in one_head.message


def test_online_softmax_reference_passes():
    assert check_online_softmax_update(online_softmax_update).passed


def test_online_softmax_folded_over_blocks_is_softmax():
    """The reference, applied block by block, reproduces softmax(s) @ V exactly (float64)."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 23, generator=generator, dtype=torch.float64) * 5
    values = torch.randn(23, 3, generator=generator, dtype=torch.float64)
    state = (torch.full((4, 1), -torch.inf, dtype=torch.float64),
             torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64))
    for start in range(0, 23, 5):
        state = online_softmax_update(*state, scores[:, start:start + 5], values[start:start + 5])
    _, total, acc = state
    expected = torch.softmax(scores, dim=-1) @ values
    assert torch.allclose(acc / total, expected, rtol=0, atol=1e-12)


def _no_rescale_acc(m, s, acc, scores, values):
    new_m, new_s, _ = online_softmax_update(m, s, acc, scores, values)
    return new_m, new_s, acc + torch.exp(scores - new_m) @ values


def _no_rescale_sum(m, s, acc, scores, values):
    new_m, _, new_acc = online_softmax_update(m, s, acc, scores, values)
    return new_m, s + torch.exp(scores - new_m).sum(-1, keepdim=True), new_acc


def _no_max(m, s, acc, scores, values):
    new_m = torch.maximum(m, scores.max(-1, keepdim=True).values)
    probs = torch.exp(scores)
    return new_m, torch.exp(m) * s + probs.sum(-1, keepdim=True), torch.exp(m) * acc + probs @ values


def test_online_softmax_mistakes_are_named():
    acc = check_online_softmax_update(_no_rescale_acc)
    assert not acc.passed and "new_acc forgot to rescale" in acc.message
    total = check_online_softmax_update(_no_rescale_sum)
    assert not total.passed and "new_sum forgot to rescale" in total.message
    overflow = check_online_softmax_update(_no_max)
    assert not overflow.passed and "overflowed" in overflow.message
    shape = check_online_softmax_update(
        lambda m, s, a, sc, v: tuple(t.squeeze(-1) for t in online_softmax_update(m, s, a, sc, v)))
    assert not shape.passed and "keepdim" in shape.message
