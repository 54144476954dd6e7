"""Reference solutions for notebook 09 (retrieval-augmented generation).

Teaching versions: plain Python dictionaries and loops, checked against ``course_utils.rag``
(whose ``BM25`` equals ``rank_bm25``'s scores with its idf variant, and whose ``evaluate``
makes the notebook's tables).

The inverted index format (exercise 09.1, read by 09.2)::

    {"postings": {term: {document index: term frequency, ...}, ...},
     "doc_lengths": [number of terms of document 0, of document 1, ...]}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def build_inverted_index(documents: Sequence[Sequence[str]]) -> dict:
    """An inverted index of tokenised documents (lists of terms).

    Returns ``{"postings": {term: {doc: tf}}, "doc_lengths": [len(doc) for each doc]}``:
    for each term, the documents (0-based indices) that contain it and how often.
    """
    postings: dict[str, dict[int, int]] = {}
    for doc, terms in enumerate(documents):
        for term in terms:
            counts = postings.setdefault(term, {})
            counts[doc] = counts.get(doc, 0) + 1
    return {"postings": postings, "doc_lengths": [len(terms) for terms in documents]}


def bm25_scores(query_tokens: Sequence[str], index: dict, k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Okapi BM25 score of every document for a query: ``(N,)`` float64, 0 where no term matches.

    Reads only the postings of the query's terms. idf = ln(1 + (N - df + 0.5) / (df + 0.5));
    each occurrence of a term in the query counts (a repeated query term adds twice).
    """
    lengths = np.asarray(index["doc_lengths"], dtype=np.float64)  # (N,)
    n_docs, avg_length = len(lengths), float(lengths.mean())
    scores = np.zeros(n_docs, dtype=np.float64)
    for term in query_tokens:
        postings = index["postings"].get(term)
        if not postings:
            continue
        idf = math.log(1 + (n_docs - len(postings) + 0.5) / (len(postings) + 0.5))
        for doc, tf in postings.items():
            norm = k1 * (1 - b + b * lengths[doc] / avg_length)
            scores[doc] += idf * tf * (k1 + 1) / (tf + norm)
    return scores


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = 60) -> list[tuple[str, float]]:
    """Fuse rankings (ids, best first) by RRF: each id scores sum of 1 / (k + rank), rank from 1.

    Returns (id, score) pairs sorted best first; equal scores keep first-seen order.
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])  # sorted() is stable


def retrieval_metrics(
    runs: Sequence[Sequence[str]], relevant: Sequence[set[str]], ks: Sequence[int] = (1, 3, 5),
    depth: int = 10,
) -> dict[str, float]:
    """Mean recall@k (for each k) and MRR over questions.

    ``runs[i]``: the ids retrieved for question i, best first; ``relevant[i]``: the ids that
    answer it. recall@k of one question = (relevant ids in its top k) / (its relevant ids);
    its reciprocal rank = 1 / (rank of its first relevant id within ``depth``), 0 if none.
    Both are averaged over the questions. Returns ``{"recall@1": …, …, "MRR": …}``.
    """
    totals = dict.fromkeys([f"recall@{k}" for k in ks] + ["MRR"], 0.0)
    for ranked, answers in zip(runs, relevant, strict=True):
        ranked = list(ranked)[:depth]
        for k in ks:
            totals[f"recall@{k}"] += len(set(ranked[:k]) & set(answers)) / len(answers)
        totals["MRR"] += next((1 / rank for rank, i in enumerate(ranked, 1) if i in answers), 0.0)
    return {name: total / len(runs) for name, total in totals.items()}
