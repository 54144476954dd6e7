"""Checkers of notebooks 01-03 pass the reference and catch (and name) typical mistakes."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from course_utils.exercises import nb01, nb02, nb03
from course_utils.solutions import nb01 as sol01
from course_utils.solutions import nb02 as sol02
from course_utils.solutions import nb03 as sol03

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


def failed_with(result, words: str) -> bool:
    return (not result.passed) and words in result.message


# --- notebook 01 -------------------------------------------------------------------------


def test_count_pairs_checker():
    assert nb01.check_count_pairs(sol01.count_pairs).passed
    assert failed_with(nb01.check_count_pairs(lambda ids: {p: 1 for p in pairwise(ids)}),
                       "every count is 1")

    def stepping_by_two(ids):
        counts = {}
        for i in range(0, len(ids) - 1, 2):
            counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
        return counts

    assert failed_with(nb01.check_count_pairs(stepping_by_two), "pairs overlap")
    assert failed_with(nb01.check_count_pairs(lambda ids: list(pairwise(ids))), "expected a dict")
    assert failed_with(nb01.check_count_pairs(lambda ids: {(a, a): 1 for a in ids}), "not adjacent")


def test_merge_pair_checker():
    assert nb01.check_merge_pair(sol01.merge_pair).passed

    def no_skip(ids, pair, new_id):  # forgets to jump past the merged pair
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
            else:
                out.append(ids[i])
            i += 1
        return out

    def drops_last(ids, pair, new_id):
        out, i = [], 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    assert failed_with(nb01.check_merge_pair(no_skip), "kept the merged ids too")
    assert failed_with(nb01.check_merge_pair(drops_last), "last id is missing")
    assert failed_with(nb01.check_merge_pair(lambda ids, p, n: list(ids)), "nothing was merged")


def test_not_attempted_is_reported():
    def stub(ids):
        raise NotImplementedError

    assert failed_with(nb01.check_count_pairs(stub), "not attempted")


# --- notebook 02 -------------------------------------------------------------------------


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


# --- notebook 03 -------------------------------------------------------------------------


def test_sinusoidal_checker():
    assert nb03.check_sinusoidal_encoding(sol03.sinusoidal_encoding).passed

    def swapped(seq_len, d_model):
        pe = sol03.sinusoidal_encoding(seq_len, d_model)
        return torch.stack((pe[:, 1::2], pe[:, 0::2]), dim=-1).reshape(seq_len, d_model)

    def blocks(seq_len, d_model):
        pe = sol03.sinusoidal_encoding(seq_len, d_model)
        return torch.cat((pe[:, 0::2], pe[:, 1::2]), dim=1)

    def exponent_i(seq_len, d_model):
        angles = torch.arange(seq_len)[:, None] / 10000 ** (torch.arange(d_model // 2) / d_model)
        return torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(seq_len, d_model)

    assert failed_with(nb03.check_sinusoidal_encoding(swapped), "swapped")
    assert failed_with(nb03.check_sinusoidal_encoding(blocks), "interleave")
    assert failed_with(nb03.check_sinusoidal_encoding(exponent_i), "2i / d_model")


def test_apply_rope_checker():
    from course_utils.positional import apply_rope_adjacent_pairs

    assert nb03.check_apply_rope(sol03.apply_rope).passed
    assert failed_with(nb03.check_apply_rope(apply_rope_adjacent_pairs), "adjacent pairs")
    assert failed_with(nb03.check_apply_rope(lambda x, p, b: sol03.apply_rope(x, -p, b)), "wrong way")
    assert failed_with(nb03.check_apply_rope(lambda x, p, b: x.clone()), "nothing was rotated")
    ignores_positions = lambda x, p, b: sol03.apply_rope(x, torch.arange(x.shape[-2]), b)  # noqa: E731
    assert failed_with(nb03.check_apply_rope(ignores_positions), "given positions")


def test_references_equal_the_course_modules():
    """The solutions and course_utils implement the same functions."""
    from course_utils.embeddings import cosine_similarity, mean_pool
    from course_utils.positional import apply_rope, sinusoidal_encoding
    from course_utils.tokenization import count_pairs, merge_pair

    ids = [1, 2, 1, 2, 2, 2, 3]
    assert sol01.count_pairs(ids) == count_pairs(ids)
    assert sol01.merge_pair(ids, (2, 2), 9) == merge_pair(ids, (2, 2), 9)
    a, b = torch.randn(3, 8), torch.randn(5, 8)
    assert torch.allclose(sol02.cosine_similarity(a, b), cosine_similarity(a, b), atol=1e-6)
    h, m = torch.randn(2, 4, 8), torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert torch.allclose(sol02.mean_pool(h, m), mean_pool(h, m))
    assert torch.allclose(sol03.sinusoidal_encoding(30, 16), sinusoidal_encoding(30, 16))
    x = torch.randn(2, 5, 16)
    assert torch.allclose(sol03.apply_rope(x, torch.arange(5), 500.0), apply_rope(x, torch.arange(5), 500.0))
