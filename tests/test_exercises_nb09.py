"""Notebook 09's reference solutions agree with independent oracles (course_utils.rag, whose
BM25 equals rank_bm25, and rank_bm25 itself), and its checkers report stubs as not attempted.
The typical wrong answers are in tests/test_mutations_nb09.py."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from course_utils import rag
from course_utils.exercises import nb09 as checks
from course_utils.solutions import nb09 as solutions


@pytest.fixture(autouse=True)
def _learner_mode(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")


def test_inverted_index_counts_every_term():
    documents, _ = checks.knowledge_base()
    index = solutions.build_inverted_index(documents)
    for doc in (0, 17, len(documents) - 1):
        assert {t: index["postings"][t][doc] for t in set(documents[doc])} == Counter(documents[doc])
    assert index == checks.course_index(documents)
    assert sum(len(p) for p in index["postings"].values()) == sum(len(set(d)) for d in documents)


def test_bm25_reference_equals_the_course_and_rank_bm25_on_every_question():
    from rank_bm25 import BM25Okapi

    documents, questions = checks.knowledge_base()
    index = solutions.build_inverted_index(documents)
    course, library = rag.BM25(documents), BM25Okapi(documents)
    for q in questions:
        terms = rag.tokenize(q.question)
        np.testing.assert_allclose(solutions.bm25_scores(terms, index), course.scores(terms), rtol=1e-12, atol=0)
    # rank_bm25 ranks with another idf (ln((N - n + 0.5)/(n + 0.5)), floored): the rankings of
    # its top hit agree on most questions, and the two idfs agree where no term is common
    same_top = np.mean([np.argmax(solutions.bm25_scores(rag.tokenize(q.question), index))
                        == np.argmax(library.get_scores(rag.tokenize(q.question))) for q in questions])
    assert same_top > 0.9


def test_rrf_reference_agrees_with_the_course():
    for rankings, k in checks.RRF_CASES:
        ours, course = solutions.reciprocal_rank_fusion(rankings, k), rag.reciprocal_rank_fusion(rankings, k)
        assert [i for i, _ in ours] == [i for i, _ in course]
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in course], rtol=1e-12)


def test_metrics_reference_equals_rag_evaluate_on_bm25_runs():
    passages = rag.load_passages()
    questions = rag.load_questions(passages=passages)
    retriever = rag.BM25Retriever(passages)
    hits = retriever.search_many([q.question for q in questions], 10)
    ours = solutions.retrieval_metrics([[h.passage.id for h in run] for run in hits],
                                       [set(q.passage_ids) for q in questions])
    course = rag.evaluate(retriever, questions, k=(1, 3, 5), runs=hits)
    assert ours.keys() == course.keys()
    for name in ours:
        assert ours[name] == pytest.approx(course[name], abs=1e-12)


@pytest.mark.parametrize("name", ["build_inverted_index", "bm25_scores", "reciprocal_rank_fusion",
                                  "retrieval_metrics"])
def test_stubs_are_not_attempted(name):
    def stub(*args, **kwargs):
        raise NotImplementedError

    result = getattr(checks, f"check_{name}")(stub)
    assert not result.passed and "not attempted" in result.message
