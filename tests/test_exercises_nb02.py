"""Checkers of notebook 02 pass the reference and catch (and name) typical mistakes."""

from __future__ import annotations

import pytest
import torch

from course_utils.exercises import nb02
from course_utils.solutions import nb02 as sol02

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


def failed_with(result, words: str) -> bool:
    return (not result.passed) and words in result.message


def test_cosine_similarity_checker():
    assert nb02.check_cosine_similarity(sol02.cosine_similarity).passed
    assert failed_with(nb02.check_cosine_similarity(lambda a, b: a @ b.T), "plain dot product")
    assert failed_with(nb02.check_cosine_similarity(lambda a, b: sol02.cosine_similarity(b, a)),
                       "transposed")
    wrong_axis = lambda a, b: (a / a.norm(dim=0)) @ (b / b.norm(dim=0)).T  # noqa: E731
    assert not nb02.check_cosine_similarity(wrong_axis).passed


def test_mean_pool_checker():
    assert nb02.check_mean_pool(sol02.mean_pool).passed
    assert failed_with(nb02.check_mean_pool(lambda h, m: h.mean(dim=1)), "averaged over padding")
    divided_by_t = lambda h, m: (h * m[..., None]).sum(1) / h.shape[1]  # noqa: E731
    assert failed_with(nb02.check_mean_pool(divided_by_t), "divided by T")
    assert failed_with(nb02.check_mean_pool(lambda h, m: (h * m[..., None]).sum(1)), "did not divide")
    assert failed_with(nb02.check_mean_pool(lambda h, m: h.mean(dim=2)), "shape")



def test_references_equal_the_course_modules():
    from course_utils.embeddings import cosine_similarity, l2_normalize, mean_pool

    a, b = torch.randn(3, 8), torch.randn(5, 8)
    assert torch.allclose(sol02.cosine_similarity(a, b), cosine_similarity(a, b), atol=1e-6)
    assert torch.allclose(sol02.cosine_similarity(a, b), torch.nn.functional.cosine_similarity(
        a[:, None], b[None], dim=-1), atol=1e-6)
    h, m = torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert torch.allclose(sol02.mean_pool(h, m), mean_pool(h, m))
    assert torch.allclose(sol02.mean_pool(h, m)[1], h[1, 0])
    assert torch.allclose(sol02.sentence_embedding(h, m), l2_normalize(h[:, :3].mean(1) * torch.tensor([[1.0], [0.0]])
                          + h[:, 0] * torch.tensor([[0.0], [1.0]])), atol=1e-6)
