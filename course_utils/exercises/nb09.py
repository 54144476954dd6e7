"""Checkers for notebook 09's exercises: an inverted index, BM25 over it, reciprocal rank
fusion and the retrieval metrics (recall@k, MRR).

Each checker compares with the course's implementation in ``course_utils.rag`` (whose BM25
equals ``rank_bm25``, tested in tests/test_rag.py) on hand-made cases and on the course's
knowledge base and its 72 questions, and names the typical slip when it recognises one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from course_utils import rag
from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb09 as solutions

# A tiny corpus where "cat" is in most documents (its rank_bm25 idf is negative), terms
# repeat inside documents and the documents have different lengths.
TINY = [["cat", "sat", "mat"], ["cat", "cat", "dog"], ["bird"], ["cat", "dog", "dog", "dog", "bird"]]


@lru_cache(maxsize=1)
def knowledge_base() -> tuple[list[list[str]], list[rag.Question]]:
    """The course's passages as BM25 terms (title + text, ``rag.tokenize``) and its questions."""
    passages = rag.load_passages()
    return [rag.tokenize(p.contents) for p in passages], rag.load_questions(passages=passages)


def course_index(documents: Sequence[Sequence[str]]) -> dict:
    """The inverted index of exercise 09.1's format, read off ``rag.BM25``'s own postings:
    ``{"postings": {term: {doc: tf}}, "doc_lengths": [...]}``."""
    bm25 = rag.BM25(documents)
    return {
        "postings": {term: {int(d): int(tf) for d, tf in zip(docs, tfs, strict=True)}
                     for term, (docs, tfs) in bm25.postings.items()},
        "doc_lengths": [int(n) for n in bm25.doc_lengths],
    }


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _allclose(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-9, atol=1e-12))


# ----------------------------------------------------------------------------- 09.1


def check_build_inverted_index(build_inverted_index: Callable[[list[list[str]]], dict]) -> CheckResult:
    """``build_inverted_index(documents) -> {"postings": {term: {doc: tf}}, "doc_lengths": [...]}``,
    compared with ``rag.BM25``'s postings on a tiny corpus and on the knowledge base."""

    def diagnose(got, expected, args, kwargs):
        (documents,) = args
        truth = course_index(documents)
        if not isinstance(got, dict) or not {"postings", "doc_lengths"} <= set(got):
            return "return a dict with the keys 'postings' and 'doc_lengths'"
        try:
            postings = {term: {int(d): tf for d, tf in dict(docs).items()}
                        for term, docs in dict(got["postings"]).items()}
            lengths = [int(n) for n in got["doc_lengths"]]
        except (TypeError, ValueError):
            return "postings must map each term to a {document index: term frequency} dict"
        want = truth["postings"]
        if len(lengths) != len(documents):
            return f"doc_lengths has {len(lengths)} entries for {len(documents)} documents: one per document"
        if set(postings) != set(want):
            missing, extra = sorted(set(want) - set(postings)), sorted(set(postings) - set(want))
            return (f"the terms differ from the documents' terms (missing e.g. {missing[:3]}, extra "
                    f"e.g. {extra[:3]}): index every term of every document, and nothing else")
        if all(set(postings[t]) == {d + 1 for d in want[t]} for t in want):
            return "document indices are shifted by one: the first document is 0"
        wrong_docs = [t for t in want if set(postings[t]) != set(want[t])]
        if wrong_docs:
            return f"term {wrong_docs[0]!r} lists the wrong documents: a posting is every document containing it"
        if postings != want:
            if all(tf == 1 for docs in postings.values() for tf in docs.values()):
                return ("every term frequency is 1: count each occurrence of a term in a document "
                        "(a set of terms loses the repeats)")
            return "some term frequencies are wrong: count how often the term occurs in that document"
        if lengths != truth["doc_lengths"]:
            if lengths == [len(set(doc)) for doc in documents]:
                return "doc_lengths counts distinct terms: a document's length is all of its terms, repeats included"
            return "doc_lengths are wrong: the number of terms of each document"
        return None

    documents, _ = knowledge_base()
    return run_check(
        "build_inverted_index", build_inverted_index, solutions.build_inverted_index,
        [((TINY,), {}), ((documents,), {})], diagnose, hint=True,
    )


# ----------------------------------------------------------------------------- 09.2


def _bm25_variant(query, index, k1=1.5, b=0.75, idf="lucene", saturate=True, dedupe=False):
    """BM25 with one thing changed, to recognise a slip (scores of every document, (N,))."""
    lengths = np.asarray(index["doc_lengths"], dtype=np.float64)
    n, avg = len(lengths), float(lengths.mean())
    scores = np.zeros(n)
    for term in (dict.fromkeys(query) if dedupe else query):
        docs = index["postings"].get(term, {})
        if not docs:
            continue
        df = len(docs)
        weight = {"lucene": math.log(1 + (n - df + 0.5) / (df + 0.5)),
                  "raw": math.log((n - df + 0.5) / (df + 0.5)),
                  "plain": math.log(n / df)}[idf]
        for doc, tf in docs.items():
            if saturate:
                scores[doc] += weight * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[doc] / avg))
            else:
                scores[doc] += weight * tf
    return scores


def _bm25_cases() -> list[tuple[tuple, dict]]:
    documents, questions = knowledge_base()
    tiny, kb = course_index(TINY), course_index(documents)
    cases = [((["cat", "dog"], tiny), {}), ((["dog", "dog", "bird"], tiny), {}),
             ((["cat", "mat"], tiny), {"k1": 1.2, "b": 0.5}), ((["unicorn"], tiny), {})]
    return cases + [((rag.tokenize(q.question), kb), {}) for q in questions]


def check_bm25_scores(bm25_scores: Callable[..., Sequence[float]]) -> CheckResult:
    """``bm25_scores(query_tokens, index, k1=1.5, b=0.75) -> (N,)`` scores, compared with
    ``rag.BM25(documents, k1, b).scores(query_tokens)`` (tiny corpus, then all 72
    questions of the course on its knowledge base)."""
    documents, _ = knowledge_base()
    corpora = {len(TINY): TINY, len(documents): documents}

    @lru_cache(maxsize=4)
    def _course_bm25(n_docs: int, k1: float, b: float) -> rag.BM25:
        return rag.BM25(corpora[n_docs], k1=k1, b=b)

    def diagnose(got, expected, args, kwargs):
        query, index = args
        k1, b = kwargs.get("k1", 1.5), kwargs.get("b", 0.75)
        truth = _course_bm25(len(index["doc_lengths"]), k1, b).scores(query)
        try:
            got = np.asarray(got, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            return f"returned {type(got).__name__}; expected one score per document (a list or array)"
        if got.shape != truth.shape:
            return f"{got.size} scores for {truth.size} documents: return one score per document, 0 where no term matches"
        if _allclose(got, truth):
            return None
        if not np.isfinite(got).all():
            return "some scores are inf/NaN: a term no document contains must add nothing"
        slips = [
            (dict(idf="raw"), "idf without the 1 + inside the log (rank_bm25's variant, negative for "
                              "terms in more than half the documents); use the formula above"),
            (dict(idf="plain"), "idf = ln(N / df) has no +0.5 smoothing; use the formula above"),
            (dict(b=0.0), "no document-length normalisation: the b part of the denominator is missing "
                          "(long documents must be penalised)"),
            (dict(saturate=False), "the term frequency does not saturate: idf × tf has no k1 part"),
            (dict(dedupe=True), "a query term repeated in the query must count each time it occurs"),
        ]
        for change, words in slips:
            settings = {"k1": k1, "b": b} | change
            if _allclose(got, _bm25_variant(query, index, **settings)):
                return words
        if kwargs and _allclose(got, _bm25_variant(query, index)):
            return f"k1={k1}, b={b} were passed but the scores use the defaults: use the arguments"
        worst = int(np.argmax(np.abs(got - truth)))
        return (f"query {query[:6]}: document {worst} scores {got[worst]:.4g}, the course's BM25 "
                f"gives {truth[worst]:.4g}")

    return run_check("bm25_scores", bm25_scores, solutions.bm25_scores, _bm25_cases(), diagnose, hint=True)


# ----------------------------------------------------------------------------- 09.3

RRF_CASES = [
    ([["a", "b", "c"], ["b", "c", "d"]], 60),
    ([["a", "b", "c"], ["b", "c", "d"]], 0),
    ([["p3", "p1"], ["p1", "p2"], ["p2", "p3", "p1"]], 60),
    ([["x", "y"], ["y", "x", "z"]], 60),
    ([["d1", "d2", "d3", "d4"], ["d4", "d3", "d2", "d1"], ["d2"]], 10),
]


def check_reciprocal_rank_fusion(fuse: Callable[..., list]) -> CheckResult:
    """``fuse(rankings, k)`` must return (id, score) pairs, best first, equal to
    ``rag.reciprocal_rank_fusion``."""

    def diagnose(got, expected, args, kwargs):
        rankings, k = args
        want_pairs = rag.reciprocal_rank_fusion(rankings, k)
        try:
            got = [(str(i), float(s)) for i, s in got]
        except (TypeError, ValueError):
            return f"expected a list of (id, score) pairs, got {got!r:.80}"
        if [i for i, _ in got] == [i for i, _ in want_pairs] and all(
            _close(g, e) for (_, g), (_, e) in zip(got, want_pairs, strict=True)
        ):
            return None
        want = dict(want_pairs)
        if sorted(i for i, _ in got) != sorted(want):
            return (f"ids {sorted(i for i, _ in got)}: expected every id of every ranking once, "
                    f"{sorted(want)}")
        got_scores = dict(got)
        if all(_close(got_scores[i], want[i]) for i in want):
            return "scores are right but the order is not: sort by score, highest first"
        if k >= 1:  # 0-based ranks = 1-based ranks with k - 1
            zero_based = dict(rag.reciprocal_rank_fusion(rankings, k - 1))
            if all(_close(got_scores[i], zero_based[i]) for i in want):
                return "ranks must start at 1, not 0 (the best document has rank 1)"
            without_k = dict(rag.reciprocal_rank_fusion(rankings, 0))
            if all(_close(got_scores[i], without_k[i]) for i in want):
                return f"the constant k={k} is missing: each term is 1 / (k + rank)"
        best_only = {i: max(1 / (k + r.index(i) + 1) for r in rankings if i in r) for i in want}
        if all(_close(got_scores[i], best_only[i]) for i in want):
            return "an id found by several rankings must get the sum of its terms, not only its best one"
        wrong = next(i for i in want if not _close(got_scores[i], want[i]))
        return f"k={k}: id {wrong!r} scores {got_scores[wrong]:.5g}, RRF gives {want[wrong]:.5g}"

    return run_check(
        "reciprocal_rank_fusion", fuse, solutions.reciprocal_rank_fusion,
        [(case, {}) for case in RRF_CASES], diagnose, hint=True,
    )


# ----------------------------------------------------------------------------- 09.4


def course_metrics(runs: Sequence[Sequence[str]], relevant: Sequence[set[str]],
                   ks: Sequence[int] = (1, 3, 5), depth: int = 10) -> dict[str, float]:
    """``rag.evaluate`` (what makes the notebook's tables) on runs given as id lists."""
    questions = [rag.Question(f"q{i}", "?", tuple(sorted(answers)), "-") for i, answers in enumerate(relevant)]
    hits = [[rag.Hit(rag.Passage(i, "", ""), 0.0, rank) for rank, i in enumerate(run, 1)] for run in runs]
    return rag.evaluate(None, questions, k=tuple(ks), depth=depth, runs=hits)


SYNTHETIC_RUNS = [  # ids best first; the second question has two answers, the third none found
    (["a", "b", "c", "d", "e"], {"c"}),
    (["x", "p", "y", "q", "z"], {"p", "q"}),
    (["m", "n", "o"], {"r"}),
    ([f"d{i}" for i in range(14)], {"d12", "d1"}),
]


def _metric_cases() -> list[tuple[tuple, dict]]:
    documents, questions = knowledge_base()
    passages = rag.load_passages()
    hits = rag.BM25Retriever(passages).search_many([q.question for q in questions], 15)
    kb_runs = [[h.passage.id for h in run] for run in hits]
    kb_relevant = [set(q.passage_ids) for q in questions]
    runs, relevant = zip(*SYNTHETIC_RUNS, strict=True)
    return [((list(runs), list(relevant)), {}),
            ((list(runs), list(relevant)), {"ks": (2, 4), "depth": 4}),
            ((kb_runs, kb_relevant), {})]


def check_retrieval_metrics(retrieval_metrics: Callable[..., dict]) -> CheckResult:
    """``retrieval_metrics(runs, relevant, ks=(1, 3, 5), depth=10) -> {"recall@k": …, "MRR": …}``,
    compared with ``rag.evaluate`` on hand-made runs and on BM25's runs for the course's
    72 questions."""

    def diagnose(got, expected, args, kwargs):
        runs, relevant = args
        ks, depth = kwargs.get("ks", (1, 3, 5)), kwargs.get("depth", 10)
        truth = course_metrics(runs, relevant, ks, depth)
        if not isinstance(got, dict) or set(truth) - set(got):
            return f"return a dict with the keys {list(truth)}"
        try:
            got = {name: float(got[name]) for name in truth}
        except (TypeError, ValueError):
            return "every value must be a number"
        runs = [list(r)[:depth] for r in runs]
        n = len(runs)
        for k in ks:
            name = f"recall@{k}"
            if _close(got[name], truth[name]):
                continue
            found = [len(set(r[:k]) & a) for r, a in zip(runs, relevant, strict=True)]
            if _close(got[name], sum(f / k for f in found) / n):
                return f"{name}: you divided by k (that is precision@k); recall divides by the question's number of relevant ids"
            if _close(got[name], sum(found) / sum(len(a) for a in relevant)):
                return (f"{name}: pooled over all relevant ids of all questions; compute recall per "
                        "question, then average over the questions")
            if _close(got[name], sum(f > 0 for f in found) / n):
                return (f"{name}: a question counts 1 as soon as one answer is in the top k; recall is "
                        "the fraction of its relevant ids found")
            return f"{name} = {got[name]:.4g}, the course's evaluation gives {truth[name]:.4g}"
        if _close(got["MRR"], truth["MRR"]):
            return None
        first = [next((rank for rank, i in enumerate(r, 1) if i in a), None) for r, a in zip(runs, relevant, strict=True)]
        full = [next((rank for rank, i in enumerate(r, 1) if i in a), None) for r, a in zip(args[0], relevant, strict=True)]
        if _close(got["MRR"], sum(1 / r for r in full if r) / n):
            return f"MRR counted a relevant id ranked below depth={depth}: only the first {depth} results count"
        hit = [r for r in first if r]
        if hit and _close(got["MRR"], sum(1 / r for r in hit) / len(hit)):
            return "MRR averaged only over questions with a hit: a question with none counts 0"
        last = [max((rank for rank, i in enumerate(r, 1) if i in a), default=None) for r, a in zip(runs, relevant, strict=True)]
        if _close(got["MRR"], sum(1 / r for r in last if r) / n):
            return "MRR used the last relevant id found: the reciprocal rank is that of the *first* one"
        return f"MRR = {got['MRR']:.4g}, the course's evaluation gives {truth['MRR']:.4g}"

    return run_check("retrieval_metrics", retrieval_metrics, solutions.retrieval_metrics,
                     _metric_cases(), diagnose, hint=True)
