"""Checkers for notebook 09's exercises: a BM25 term score and reciprocal rank fusion."""

from __future__ import annotations

import math
from collections.abc import Callable

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb09 as solutions

# (tf, df, n_docs, doc_len, avg_len, k1, b): frequent/rare terms, short/long documents.
BM25_CASES = [
    (1, 1, 3, 3, 2.0, 1.5, 0.75),
    (2, 2, 3, 3, 2.0, 1.5, 0.75),
    (3, 10, 180, 40, 55.0, 1.2, 0.75),
    (1, 90, 180, 80, 55.0, 2.0, 0.5),
    (5, 4, 1000, 20, 60.0, 1.5, 0.0),
]

RRF_CASES = [
    ([["a", "b", "c"], ["b", "c", "d"]], 60),
    ([["a", "b", "c"], ["b", "c", "d"]], 0),
    ([["p3", "p1"], ["p1", "p2"], ["p2", "p3", "p1"]], 60),
    ([["x", "y"], ["y", "x"]], 60),
]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_bm25_term_score(bm25_term_score: Callable[..., float]) -> CheckResult:
    """``bm25_term_score(tf, df, n_docs, doc_len, avg_len, k1, b)`` must match Okapi BM25."""

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, (int, float)):
            return f"returned {type(got).__name__}, expected a float"
        if _close(got, expected):
            return None
        tf, df, n, dl, avg, k1, b = args
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        saturation = tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avg))
        if _close(got, saturation):
            return f"got {got:.4g}: the idf factor is missing (multiply by {idf:.4g})"
        if _close(got, idf * tf):
            return f"got {got:.4g} = idf x tf: the term frequency must saturate (the k1 part)"
        if _close(got, idf * tf * (k1 + 1) / (tf + k1)):
            return (f"got {got:.4g}: no length normalisation; divide by "
                    "tf + k1 * (1 - b + b * doc_len / avg_len)")
        if _close(got, math.log((n - df + 0.5) / (df + 0.5)) * saturation):
            return f"got {got:.4g}: idf without the 1 + inside the log (it can go negative)"
        return f"got {got:.6g} for {args}, expected {expected:.6g}"

    return run_check(
        "bm25_term_score", bm25_term_score, solutions.bm25_term_score,
        [(case, {}) for case in BM25_CASES], diagnose,
        hint="idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * doc_len / avg_len)), "
        "idf = ln(1 + (N - df + 0.5) / (df + 0.5))",
    )


def check_reciprocal_rank_fusion(fuse: Callable[..., list]) -> CheckResult:
    """``fuse(rankings, k)`` must return (id, score) pairs, best first, with RRF scores."""

    def diagnose(got, expected, args, kwargs):
        try:
            got = [(str(i), float(s)) for i, s in got]
        except (TypeError, ValueError):
            return f"expected a list of (id, score) pairs, got {got!r:.80}"
        if [i for i, _ in got] == [i for i, _ in expected] and all(
            _close(g, e) for (_, g), (_, e) in zip(got, expected, strict=True)
        ):
            return None
        rankings, k = args
        if sorted(i for i, _ in got) != sorted(i for i, _ in expected):
            return (f"ids {sorted(i for i, _ in got)}, expected each id in any ranking once: "
                    f"{sorted(i for i, _ in expected)}")
        got_scores, want = dict(got), dict(expected)
        if all(_close(got_scores[i], want[i]) for i in want):
            return "scores are right but the order is not: sort by score, highest first"
        if k >= 1:  # 0-based ranks = 1-based ranks with k - 1
            zero_based = dict(solutions.reciprocal_rank_fusion(rankings, k - 1))
            if all(_close(got_scores[i], zero_based[i]) for i in want):
                return "ranks must start at 1, not 0 (the best document has rank 1)"
            without_k = dict(solutions.reciprocal_rank_fusion(rankings, 0))
            if all(_close(got_scores[i], without_k[i]) for i in want):
                return f"the constant k={k} is missing: each term is 1 / (k + rank)"
        return f"scores {got_scores} for k={k}, expected {want}"

    return run_check(
        "reciprocal_rank_fusion", fuse, solutions.reciprocal_rank_fusion,
        [(case, {}) for case in RRF_CASES], diagnose,
        hint="for each ranking, for rank, id in enumerate(ranking, start=1): "
        "score[id] += 1 / (k + rank); then sort by score, highest first",
    )
