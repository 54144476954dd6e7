"""Reference solutions for notebook 09 (retrieval-augmented generation)."""

from __future__ import annotations

import math


def bm25_term_score(
    tf: int, df: int, n_docs: int, doc_len: int, avg_len: float, k1: float = 1.5, b: float = 0.75
) -> float:
    """One query term's BM25 contribution to one document's score.

    idf = ln(1 + (N - df + 0.5) / (df + 0.5)); the term-frequency factor saturates with k1 and
    is normalised by the document's length relative to the average, weighted by b.
    """
    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * doc_len / avg_len))


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = 60) -> list[tuple[str, float]]:
    """Fuse rankings (ids, best first) by RRF: each id scores sum of 1 / (k + rank), rank from 1.

    Returns (id, score) pairs sorted best first; equal scores keep first-seen order.
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])  # sorted() is stable
