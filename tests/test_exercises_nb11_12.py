"""Checkers of notebooks 11-12 pass the references and catch the typical mistakes, and the
references agree with course_utils (analysis, training)."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils.analysis import attention_entropy, induction_score
from course_utils.exercises import nb11, nb12
from course_utils.solutions import nb11 as sol11
from course_utils.solutions import nb12 as sol12
from course_utils.training import TrainConfig

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


def test_references_pass():
    assert nb11.check_head_entropy(sol11.head_entropy).passed
    assert nb11.check_zero_head(sol11.zero_head).passed
    assert nb12.check_warmup_cosine(sol12.warmup_cosine).passed
    assert nb12.check_induction_score(sol12.induction_score).passed


def test_head_entropy_mistakes():
    def bits(w):
        return -(torch.where(w > 0, w * w.clamp_min(1e-30).log2(), 0.0)).sum(-1).mean(-1)

    def naive(w):
        return -(w * w.log()).sum(-1).mean(-1)  # 0 * log 0 = NaN

    assert "bits" in nb11.check_head_entropy(bits).message
    assert "NaN" in nb11.check_head_entropy(naive).message
    stub = nb11.check_head_entropy(lambda w: (_ for _ in ()).throw(NotImplementedError()))
    assert not stub.passed and "not attempted" in stub.message


def test_zero_head_mistakes():
    def in_place(concat, head, num_heads):
        d = concat.shape[-1] // num_heads
        concat[..., head * d : (head + 1) * d] = 0
        return concat

    def strided(concat, head, num_heads):
        out = concat.clone()
        out[..., head::num_heads] = 0
        return out

    assert "in place" in nb11.check_zero_head(in_place).message
    assert "contiguous" in nb11.check_zero_head(strided).message


def test_warmup_cosine_mistakes():
    def from_zero(step, total, peak, warmup, low):
        if step < warmup:
            return peak * step / warmup
        return sol12.warmup_cosine(step, total, peak, warmup, low)

    def to_zero(step, total, peak, warmup, low):
        return sol12.warmup_cosine(step, total, peak, warmup, 0.0)

    assert "step + 1" in nb12.check_warmup_cosine(from_zero).message
    assert "min_lr" in nb12.check_warmup_cosine(to_zero).message


def test_induction_score_mistakes():
    def duplicate(weights, start, length):
        q = torch.arange(start + length, start + 2 * length)
        return weights[:, q, q - length].mean(-1)

    def previous(weights, start, length):
        q = torch.arange(start + length, start + 2 * length)
        return weights[:, q, q - 1].mean(-1)

    def with_last(weights, start, length):
        q = torch.arange(start + length, start + 2 * length)
        return weights[:, q, q - length + 1].mean(-1)

    assert "duplicate-token" in nb12.check_induction_score(duplicate).message
    assert "previous-token" in nb12.check_induction_score(previous).message
    assert "last query" in nb12.check_induction_score(with_last).message


def test_references_agree_with_course_utils():
    generator = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(3, 10, 10, generator=generator), -1)
    assert torch.allclose(sol11.head_entropy(weights), attention_entropy(weights))
    assert torch.allclose(sol12.induction_score(weights, 1, 4),
                          induction_score(weights[None], 1, 4, exclude_last=True))
    config = TrainConfig(steps=60, lr=2e-3, warmup_steps=7, min_lr_ratio=0.25)
    for step in range(60):
        assert math.isclose(sol12.warmup_cosine(step, 60, 2e-3, 7, 5e-4), config.lr_at(step),
                            rel_tol=1e-9)


def test_nb11_references_match_independent_oracles():
    """head_entropy = torch.distributions' entropy; zero_head = a 0/1 head mask on (B, T, H, d)."""
    generator = torch.Generator().manual_seed(1)
    weights = torch.softmax(torch.randn(4, 6, 6, generator=generator), -1)
    weights[0, 0] = torch.tensor([1.0, 0, 0, 0, 0, 0])  # a one-hot row: 0 · log 0 = 0
    oracle = torch.distributions.Categorical(probs=weights).entropy().mean(-1)
    torch.testing.assert_close(sol11.head_entropy(weights), oracle, atol=1e-6, rtol=1e-5)
    concat = torch.randn(2, 3, 4 * 5, generator=generator)
    keep = torch.ones(4)
    keep[2] = 0
    expected = (concat.view(2, 3, 4, 5) * keep[:, None]).reshape(2, 3, 20)
    assert torch.equal(sol11.zero_head(concat, 2, 4), expected)
