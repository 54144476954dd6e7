"""Notebook 09's checkers fail typical wrong answers with a specific diagnosis; the references pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mutation import Mutant, run_mutant, run_reference

from course_utils.solutions import nb09 as solutions

MODULE = "nb09"


# ---- 09.1 build_inverted_index
def _set_tf(documents):
    index = solutions.build_inverted_index([sorted(set(d)) for d in documents])
    index["doc_lengths"] = [len(d) for d in documents]
    return index


def _from_one(documents):
    index = solutions.build_inverted_index(documents)
    index["postings"] = {t: {d + 1: tf for d, tf in docs.items()} for t, docs in index["postings"].items()}
    return index


def _distinct_lengths(documents):
    index = solutions.build_inverted_index(documents)
    index["doc_lengths"] = [len(set(d)) for d in documents]
    return index


def _list_of_lists(documents):
    return [[t for t in d] for d in documents]


# ---- 09.2 bm25_scores
def _bm25(query, index, k1=1.5, b=0.75, idf="lucene", saturate=True, length=True, dedupe=False):
    lengths = np.asarray(index["doc_lengths"], dtype=float)
    n, avg = len(lengths), lengths.mean()
    scores = np.zeros(n)
    for term in (dict.fromkeys(query) if dedupe else query):
        docs = index["postings"].get(term, {})
        if not docs:
            continue
        df = len(docs)
        weight = {"lucene": math.log(1 + (n - df + 0.5) / (df + 0.5)),
                  "raw": math.log((n - df + 0.5) / (df + 0.5)), "plain": math.log(n / df)}[idf]
        for doc, tf in docs.items():
            norm = k1 * ((1 - b + b * lengths[doc] / avg) if length else 1)
            scores[doc] += weight * (tf * (k1 + 1) / (tf + norm) if saturate else tf)
    return scores


# ---- 09.3 reciprocal_rank_fusion
def _zero_based(rankings, k=60):
    scores = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking):
            scores[i] = scores.get(i, 0.0) + 1 / (k + rank)
    return sorted(scores.items(), key=lambda x: -x[1])


def _best_only(rankings, k=60):
    scores = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking, 1):
            scores[i] = max(scores.get(i, 0.0), 1 / (k + rank))
    return sorted(scores.items(), key=lambda x: -x[1])


# ---- 09.4 retrieval_metrics
def _metrics(runs, relevant, ks=(1, 3, 5), depth=10, recall="per question", mrr="first"):
    out = {}
    cut = [list(r)[:depth] for r in runs]
    for k in ks:
        found = [len(set(r[:k]) & a) for r, a in zip(cut, relevant, strict=True)]
        if recall == "precision":
            out[f"recall@{k}"] = sum(f / k for f in found) / len(runs)
        elif recall == "pooled":
            out[f"recall@{k}"] = sum(found) / sum(len(a) for a in relevant)
        elif recall == "hit":
            out[f"recall@{k}"] = sum(f > 0 for f in found) / len(runs)
        else:
            out[f"recall@{k}"] = sum(f / len(a) for f, a in zip(found, relevant, strict=True)) / len(runs)
    source = runs if mrr == "no depth" else cut
    ranks = [next((i for i, d in enumerate(r, 1) if d in a), None) for r, a in zip(source, relevant, strict=True)]
    if mrr == "hits only":
        hits = [r for r in ranks if r]
        out["MRR"] = sum(1 / r for r in hits) / max(len(hits), 1)
    elif mrr == "last":
        last = [max((i for i, d in enumerate(r, 1) if d in a), default=None) for r, a in zip(cut, relevant, strict=True)]
        out["MRR"] = sum(1 / r for r in last if r) / len(runs)
    else:
        out["MRR"] = sum(1 / r for r in ranks if r) / len(runs)
    return out


MUTANTS = [
    Mutant("check_build_inverted_index", "term frequency from a set", _set_tf, expect="every term frequency is 1"),
    Mutant("check_build_inverted_index", "documents numbered from 1", _from_one, expect="shifted by one"),
    Mutant("check_build_inverted_index", "length = distinct terms", _distinct_lengths, expect="counts distinct terms"),
    Mutant("check_build_inverted_index", "not a dict", _list_of_lists, expect="'postings' and 'doc_lengths'"),
    Mutant("check_bm25_scores", "idf without 1 +", lambda q, i, k1=1.5, b=0.75: _bm25(q, i, k1, b, idf="raw"),
           expect="without the 1 +"),
    Mutant("check_bm25_scores", "idf unsmoothed", lambda q, i, k1=1.5, b=0.75: _bm25(q, i, k1, b, idf="plain"),
           expect="no +0.5 smoothing"),
    Mutant("check_bm25_scores", "no length normalisation", lambda q, i, k1=1.5, b=0.75: _bm25(q, i, k1, b, length=False),
           expect="no document-length normalisation"),
    Mutant("check_bm25_scores", "no k1 saturation", lambda q, i, k1=1.5, b=0.75: _bm25(q, i, k1, b, saturate=False),
           expect="does not saturate"),
    Mutant("check_bm25_scores", "query terms deduplicated", lambda q, i, k1=1.5, b=0.75: _bm25(q, i, k1, b, dedupe=True),
           expect="repeated in the query"),
    Mutant("check_bm25_scores", "k1 and b ignored", lambda q, i, k1=1.5, b=0.75: _bm25(q, i), expect="use the arguments"),
    Mutant("check_reciprocal_rank_fusion", "ranks from 0", _zero_based, expect="start at 1"),
    Mutant("check_reciprocal_rank_fusion", "ascending order",
           lambda r, k=60: solutions.reciprocal_rank_fusion(r, k)[::-1], expect="highest first"),
    Mutant("check_reciprocal_rank_fusion", "no k", lambda r, k=60: solutions.reciprocal_rank_fusion(r, 0),
           expect="is missing"),
    Mutant("check_reciprocal_rank_fusion", "best term only", _best_only, expect="sum of its terms"),
    Mutant("check_retrieval_metrics", "precision instead of recall",
           lambda r, a, ks=(1, 3, 5), depth=10: _metrics(r, a, ks, depth, recall="precision"), expect="precision@k"),
    Mutant("check_retrieval_metrics", "recall pooled over retrieved ids",
           lambda r, a, ks=(1, 3, 5), depth=10: _metrics(r, a, ks, depth, recall="pooled"), expect="per question"),
    Mutant("check_retrieval_metrics", "hit rate instead of recall",
           lambda r, a, ks=(1, 3, 5), depth=10: _metrics(r, a, ks, depth, recall="hit"), expect="fraction of its relevant"),
    Mutant("check_retrieval_metrics", "MRR beyond depth",
           lambda r, a, ks=(1, 3, 5), depth=10: _metrics(r, a, ks, depth, mrr="no depth"), expect="below depth"),
    Mutant("check_retrieval_metrics", "MRR over hits only",
           lambda r, a, ks=(1, 3, 5), depth=10: _metrics(r, a, ks, depth, mrr="hits only"), expect="counts 0"),
    Mutant("check_retrieval_metrics", "MRR of the last relevant",
           lambda r, a, ks=(1, 3, 5), depth=10: _metrics(r, a, ks, depth, mrr="last"), expect="first"),
]
REFERENCES = {
    "check_build_inverted_index": solutions.build_inverted_index,
    "check_bm25_scores": solutions.bm25_scores,
    "check_reciprocal_rank_fusion": solutions.reciprocal_rank_fusion,
    "check_retrieval_metrics": solutions.retrieval_metrics,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])
