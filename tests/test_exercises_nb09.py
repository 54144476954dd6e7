"""Notebook 09's checkers pass the references and diagnose typical mistakes in words."""

from __future__ import annotations

import math

import numpy as np
import pytest

from course_utils import rag
from course_utils.exercises.nb09 import (
    BM25_CASES,
    check_bm25_term_score,
    check_reciprocal_rank_fusion,
)
from course_utils.solutions.nb09 import bm25_term_score, reciprocal_rank_fusion


@pytest.fixture(autouse=True)
def _learner_mode(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")


def test_bm25_reference_agrees_with_the_library():
    # Document 1 of [[cat, sat], [cat, cat, dog], [bird]] for the term "cat".
    index = rag.BM25([["cat", "sat"], ["cat", "cat", "dog"], ["bird"]])
    assert bm25_term_score(2, 2, 3, 3, 2.0) == pytest.approx(index.scores(["cat"])[1], rel=1e-12)
    assert len(BM25_CASES) >= 4


def test_rrf_reference_agrees_with_the_library():
    rankings = [["p3", "p1"], ["p1", "p2"], ["p2", "p3", "p1"]]
    ours, lib = reciprocal_rank_fusion(rankings, 60), rag.reciprocal_rank_fusion(rankings, 60)
    assert [i for i, _ in ours] == [i for i, _ in lib]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in lib])


def test_bm25_checker_passes_reference_and_names_mistakes():
    assert check_bm25_term_score(bm25_term_score).passed

    def no_idf(tf, df, n, dl, avg, k1=1.5, b=0.75):
        return tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avg))

    def no_length(tf, df, n, dl, avg, k1=1.5, b=0.75):
        return math.log(1 + (n - df + 0.5) / (df + 0.5)) * tf * (k1 + 1) / (tf + k1)

    def raw_idf(tf, df, n, dl, avg, k1=1.5, b=0.75):
        return math.log((n - df + 0.5) / (df + 0.5)) * no_idf(tf, df, n, dl, avg, k1, b)

    for wrong, words in [(no_idf, "idf factor is missing"), (no_length, "no length normalisation"),
                         (raw_idf, "without the 1 +")]:
        result = check_bm25_term_score(wrong)
        assert not result.passed and words in result.message, result.message


def test_rrf_checker_passes_reference_and_names_mistakes():
    assert check_reciprocal_rank_fusion(reciprocal_rank_fusion).passed

    def zero_based(rankings, k=60):
        scores = {}
        for ranking in rankings:
            for rank, i in enumerate(ranking):
                scores[i] = scores.get(i, 0.0) + 1 / (k + rank)
        return sorted(scores.items(), key=lambda x: -x[1])

    def ascending(rankings, k=60):
        return reciprocal_rank_fusion(rankings, k)[::-1]

    def no_k(rankings, k=60):
        return reciprocal_rank_fusion(rankings, 0)

    for wrong, words in [(zero_based, "start at 1"), (ascending, "highest first"),
                         (no_k, "constant k=60 is missing")]:
        result = check_reciprocal_rank_fusion(wrong)
        assert not result.passed and words in result.message, result.message


def test_stubs_are_not_attempted():
    def stub(*args, **kwargs):
        raise NotImplementedError

    assert "not attempted" in check_bm25_term_score(stub).message
    assert "not attempted" in check_reciprocal_rank_fusion(stub).message
