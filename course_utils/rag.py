"""Retrieval-augmented generation (notebook 09): retrieve passages, then answer from them.

The pieces, in pipeline order:

- data: ``load_passages`` / ``load_questions`` read the course's JSONL files in ``data/``;
  ``deduplicate`` drops repeated passages (and reports them); ``chunk_text`` /
  ``chunk_passages`` split long texts into overlapping, sentence-aligned chunks.
- keyword retrieval: ``tokenize`` + ``BM25`` (Okapi BM25, written out; a test proves it equal
  to ``rank_bm25`` given the same idf) wrapped as ``BM25Retriever``.
- dense retrieval: ``DenseRetriever`` embeds with MiniLM (mean pooling over real tokens,
  L2-normalised, so inner product = cosine) into a FAISS ``IndexFlatIP`` (exact search).
- hybrid: ``reciprocal_rank_fusion`` of several rankings, wrapped as ``HybridRetriever``.
- evaluation: ``recall_at_k``, ``reciprocal_rank`` and ``evaluate`` (recall@1/3/5, MRR).
- generation: ``build_messages`` (passages with ids, for citation), ``generate`` (greedy,
  batched, SmolLM2's chat template), ``answer_matches`` (normalised containment).
- attention: ``passage_attention`` measures how much of the decoder's attention, while it
  writes the answer, lands on each retrieved passage.

Every retriever has ``name`` and ``search(query, k) -> list[Hit]`` (best first).
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from course_utils.embeddings import l2_normalize, mean_pool

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
KNOWLEDGE_BASE = DATA_DIR / "knowledge_base.jsonl"
QUESTIONS = DATA_DIR / "questions.jsonl"

# all-MiniLM-L6-v2 was trained on at most 256 word pieces (sentence_bert_config.json), even
# though its position table has 512 rows: longer inputs are truncated, as sentence-transformers
# does.
MINILM_MAX_TOKENS = 256
RRF_K = 60  # Cormack, Clarke & Buettcher (2009)
QUESTION_TYPES = ("keyword", "paraphrase")
PASSAGE_ID = re.compile(r"^p\d{3,}(#\d+)?$")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of text. ``id`` is ``p017``, or ``p017#2`` for a chunk of it."""

    id: str
    title: str
    text: str
    topic: str = ""

    @property
    def source_id(self) -> str:
        """The id of the knowledge-base passage this one came from (``p017#2`` -> ``p017``)."""
        return self.id.split("#", 1)[0]

    @property
    def contents(self) -> str:
        """What gets indexed: the title, then the text."""
        return f"{self.title}. {self.text}"


@dataclass(frozen=True)
class Question:
    """An evaluation question with the passage(s) that answer it and a reference answer."""

    id: str
    question: str
    passage_ids: tuple[str, ...]
    answer: str
    aliases: tuple[str, ...] = ()
    type: str = "keyword"


@dataclass(frozen=True)
class Hit:
    """A retrieved passage with its score and 1-based rank."""

    passage: Passage
    score: float
    rank: int


def _read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a JSONL file at {path}, found none")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path.name} line {number}: not valid JSON ({error})") from error
        if not isinstance(row, dict):
            raise ValueError(f"{path.name} line {number}: expected a JSON object, got {row!r:.60}")
        rows.append(row)
    return rows


def _require(row: dict, where: str, fields: dict[str, type]) -> None:
    for name, kind in fields.items():
        if name not in row:
            raise ValueError(f"{where}: missing field {name!r} (expected fields {sorted(fields)})")
        if not isinstance(row[name], kind):
            raise ValueError(
                f"{where}: field {name!r} must be {kind.__name__}, got {type(row[name]).__name__}"
            )


def load_passages(path: str | Path = KNOWLEDGE_BASE) -> list[Passage]:
    """Read and validate ``knowledge_base.jsonl``: fields id, title, topic, text; unique ids."""
    passages, seen = [], set()
    for number, row in enumerate(_read_jsonl(Path(path)), 1):
        where = f"{Path(path).name} row {number}"
        _require(row, where, {"id": str, "title": str, "topic": str, "text": str})
        if not PASSAGE_ID.match(row["id"]):
            raise ValueError(f"{where}: id must look like 'p001', got {row['id']!r}")
        if row["id"] in seen:
            raise ValueError(f"{where}: duplicate id {row['id']!r}")
        if not row["title"].strip() or not row["text"].strip():
            raise ValueError(f"{where}: title and text must be non-empty")
        seen.add(row["id"])
        passages.append(Passage(row["id"], row["title"], row["text"], row["topic"]))
    return passages


def load_questions(
    path: str | Path = QUESTIONS, passages: Sequence[Passage] | None = None
) -> list[Question]:
    """Read and validate ``questions.jsonl``; with ``passages``, every cited id must exist."""
    known = {p.id for p in passages} if passages is not None else None
    questions, seen = [], set()
    for number, row in enumerate(_read_jsonl(Path(path)), 1):
        where = f"{Path(path).name} row {number}"
        _require(
            row, where,
            {"id": str, "type": str, "question": str, "passage_ids": list, "answer": str,
             "aliases": list},
        )
        if row["id"] in seen:
            raise ValueError(f"{where}: duplicate id {row['id']!r}")
        if row["type"] not in QUESTION_TYPES:
            raise ValueError(f"{where}: type must be one of {QUESTION_TYPES}, got {row['type']!r}")
        if not row["passage_ids"]:
            raise ValueError(f"{where}: passage_ids must list at least one passage")
        if known is not None:
            missing = [pid for pid in row["passage_ids"] if pid not in known]
            if missing:
                raise ValueError(f"{where}: passage_ids {missing} are not in the knowledge base")
        if not row["question"].strip() or not row["answer"].strip():
            raise ValueError(f"{where}: question and answer must be non-empty")
        seen.add(row["id"])
        questions.append(
            Question(row["id"], row["question"], tuple(row["passage_ids"]), row["answer"],
                     tuple(row["aliases"]), row["type"])
        )
    return questions


def _normalise_text(text: str) -> str:
    return " ".join(text.casefold().split())


def deduplicate(passages: Sequence[Passage]) -> tuple[list[Passage], list[tuple[str, str]]]:
    """Drop passages whose text repeats an earlier one (ignoring case and whitespace).

    Returns ``(kept, dropped)`` with ``dropped`` a list of ``(dropped_id, kept_id)`` pairs.
    Duplicates would otherwise fill several of the top-k slots with the same content. Two
    *different* texts under one id are an error: the id could not be cited unambiguously.
    """
    kept: list[Passage] = []
    by_text: dict[str, str] = {}
    by_id: dict[str, str] = {}
    dropped: list[tuple[str, str]] = []
    for passage in passages:
        key = _normalise_text(passage.text)
        if passage.id in by_id and by_id[passage.id] != key:
            raise ValueError(
                f"id {passage.id!r} is used for two different texts; ids must be unique"
            )
        by_id[passage.id] = key
        if key in by_text:
            dropped.append((passage.id, by_text[key]))
            continue
        by_text[key] = passage.id
        kept.append(passage)
    return kept, dropped


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_sentences(text: str) -> list[str]:
    """Split on ., ! or ? followed by whitespace and a capital/digit (good enough for prose)."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def chunk_text(text: str, max_words: int = 80, overlap_sentences: int = 1) -> list[str]:
    """Pack whole sentences into chunks of at most ``max_words`` words.

    Each chunk after the first repeats the last ``overlap_sentences`` sentences of the
    previous one, so a fact that straddles a boundary is whole in at least one chunk. A
    single sentence longer than ``max_words`` is cut into word windows.
    """
    if not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"max_words must be a positive int, got {max_words!r}")
    if not isinstance(overlap_sentences, int) or overlap_sentences < 0:
        raise ValueError(f"overlap_sentences must be an int >= 0, got {overlap_sentences!r}")
    sentences: list[str] = []
    for sentence in split_sentences(text):
        words = sentence.split()
        for start in range(0, len(words), max_words):  # over-long sentences -> windows
            sentences.append(" ".join(words[start : start + max_words]))
    chunks: list[list[str]] = []
    current: list[str] = []
    for sentence in sentences:
        if current and sum(len(s.split()) for s in current + [sentence]) > max_words:
            chunks.append(current)
            overlap = current[-overlap_sentences:] if overlap_sentences else []
            # keep the overlap only if the new sentence still fits after it
            if sum(len(s.split()) for s in overlap + [sentence]) > max_words:
                overlap = []
            current = list(overlap)
        current.append(sentence)
    if current:
        chunks.append(current)
    return [" ".join(chunk) for chunk in chunks]


def chunk_passages(
    passages: Sequence[Passage], max_words: int = 80, overlap_sentences: int = 1
) -> list[Passage]:
    """Chunk every passage; a passage that fits keeps its id, pieces get ``id#1``, ``id#2``…"""
    chunks: list[Passage] = []
    for passage in passages:
        pieces = chunk_text(passage.text, max_words, overlap_sentences)
        if len(pieces) == 1:
            chunks.append(passage)
            continue
        for index, piece in enumerate(pieces, 1):
            chunks.append(Passage(f"{passage.id}#{index}", passage.title, piece, passage.topic))
    return chunks


# ----------------------------------------------------------------------------- keyword search

STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have how i if in "
    "into is it its of on or so such than that the their them then there these they this to "
    "was we were what when where which while who whom why will with would you your".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def check_query(query: object) -> str:
    """Return ``query`` if it is a non-empty string, else raise a ``ValueError`` saying why."""
    if not isinstance(query, str):
        raise ValueError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"query must be a non-empty string with some words in it, got {query!r}")
    return query


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric words without accents or stop words: BM25's terms."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return [word for word in _WORD.findall(text.lower()) if word not in STOPWORDS]


class BM25:
    """Okapi BM25 over pre-tokenized documents.

    score(q, d) = sum over query terms t of
        idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    with idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5)) (Lucene's form: never negative).
    ``k1`` sets how fast repeated terms saturate; ``b`` how much long documents are
    penalised. A query term repeated twice counts twice (as in rank_bm25 and Lucene).
    """

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75):
        if not documents:
            raise ValueError("BM25 needs at least one document, got none")
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = k1, b
        self.term_freqs = [Counter(doc) for doc in documents]
        self.doc_lengths = np.array([len(doc) for doc in documents], dtype=np.float64)  # (N,)
        self.avg_length = float(self.doc_lengths.mean()) or 1.0
        doc_freq = Counter(term for tf in self.term_freqs for term in tf)
        n_docs = len(documents)
        self.idf = {
            term: math.log(1 + (n_docs - n + 0.5) / (n + 0.5)) for term, n in doc_freq.items()
        }

    def __len__(self) -> int:
        return len(self.term_freqs)

    @property
    def vocabulary_size(self) -> int:
        return len(self.idf)

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for the query: ``(N,)`` float64."""
        total = np.zeros(len(self), dtype=np.float64)
        norm = self.k1 * (1 - self.b + self.b * self.doc_lengths / self.avg_length)  # (N,)
        for term in query_terms:
            idf = self.idf.get(term)
            if idf is None:  # a term no document contains adds nothing
                continue
            tf = np.array([freqs.get(term, 0) for freqs in self.term_freqs], dtype=np.float64)
            # documents without the term add 0 (written so that k1 = 0 gives 0, not 0 / 0)
            saturated = np.divide(tf * (self.k1 + 1), tf + norm, out=np.zeros_like(tf), where=tf > 0)
            total += idf * saturated
        return total


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    # stable sort on -score: ties keep corpus order, so rankings are reproducible
    return np.argsort(-scores, kind="stable")[:k]


def _check_k(k: object, limit: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return min(k, limit)


class Retriever(Protocol):
    name: str

    def search(self, query: str, k: int = 5) -> list[Hit]: ...

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]: ...


class BM25Retriever:
    """Keyword retrieval: BM25 over ``tokenize(title + text)``."""

    name = "keyword (BM25)"

    def __init__(self, passages: Sequence[Passage], k1: float = 1.5, b: float = 0.75):
        self.passages = list(passages)
        self.index = BM25([tokenize(p.contents) for p in self.passages], k1=k1, b=b)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        terms = tokenize(check_query(query))
        k = _check_k(k, len(self.passages))
        scores = self.index.scores(terms)
        return [
            Hit(self.passages[i], float(scores[i]), rank)
            for rank, i in enumerate(_top_k(scores, k), 1)
        ]

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        return [self.search(query, k) for query in queries]


# ----------------------------------------------------------------------------- dense search


class DenseRetriever:
    """Dense retrieval: MiniLM sentence vectors in a FAISS ``IndexFlatIP``.

    Vectors are mean-pooled over real tokens and L2-normalised, so the inner product FAISS
    computes is the cosine similarity. ``IndexFlatIP`` is exact brute force: for ~10^2-10^5
    passages it is fast enough and has no recall loss to explain away.
    """

    name = "dense (MiniLM + FAISS)"

    def __init__(
        self, passages: Sequence[Passage], model, tokenizer, batch_size: int = 32,
        max_length: int | None = MINILM_MAX_TOKENS,
    ):
        import faiss

        self.passages = list(passages)
        if not self.passages:
            raise ValueError("DenseRetriever needs at least one passage, got none")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
        self.max_length = min(max_length or limit, limit)
        self.vectors = self.embed([p.contents for p in self.passages])  # (N, C)
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, C)`` float32 unit vectors; inputs over ``max_length`` tokens are truncated
        with a warning (the model never saw longer inputs in training)."""
        texts = list(texts)
        lengths = [len(ids) for ids in self.tokenizer(texts, verbose=False)["input_ids"]]
        too_long = [n for n in lengths if n > self.max_length]
        if too_long:
            warnings.warn(
                f"{len(too_long)} input(s) longer than the encoder's limit of {self.max_length} "
                f"tokens (longest: {max(too_long)}): truncated to the first {self.max_length}.",
                UserWarning, stacklevel=2,
            )
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state  # (B, T, C)
            chunks.append(l2_normalize(mean_pool(hidden, batch["attention_mask"])))  # (B, C)
        return torch.cat(chunks).numpy().astype(np.float32)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """Embed all queries in batches, then one FAISS search: ``(Q, C)`` -> ``(Q, k)``."""
        vectors = self.embed([check_query(query) for query in queries])  # (Q, C)
        k = _check_k(k, len(self.passages))
        scores, indices = self.index.search(vectors, k)  # (Q, k) each
        return [
            [Hit(self.passages[i], float(s), rank)
             for rank, (s, i) in enumerate(zip(row_s, row_i, strict=True), 1)]
            for row_s, row_i in zip(scores, indices, strict=True)
        ]


# ----------------------------------------------------------------------------- hybrid search


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], k: int = RRF_K
) -> list[tuple[str, float]]:
    """Merge rankings (lists of ids, best first) by RRF: score(d) = sum 1 / (k + rank(d)).

    Ranks are 1-based; an id missing from a ranking gets nothing from it. Returns
    ``(id, score)`` pairs, best first; ties go to the id seen first (rankings in order).
    Only ranks matter, so BM25 scores (unbounded) and cosines (<= 1) need no calibration.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k < 0:
        raise ValueError(f"k must be a number >= 0, got {k!r}")
    scores: dict[str, float] = {}
    for ranking in rankings:
        if len(set(ranking)) != len(ranking):
            raise ValueError(f"a ranking lists the same id twice: {list(ranking)}")
        for rank, doc_id in enumerate(ranking, 1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    order = {doc_id: i for i, doc_id in enumerate(scores)}
    return sorted(scores.items(), key=lambda item: (-item[1], order[item[0]]))


class HybridRetriever:
    """Reciprocal rank fusion of several retrievers, each searched ``depth`` deep."""

    def __init__(self, retrievers: Sequence[Retriever], k: int = RRF_K, depth: int = 50):
        if len(retrievers) < 2:
            raise ValueError(f"hybrid search fuses >= 2 retrievers, got {len(retrievers)}")
        self.retrievers, self.k, self.depth = list(retrievers), k, depth
        self.name = "hybrid (RRF)"

    def search(self, query: str, k: int = 5) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        queries = [check_query(query) for query in queries]
        runs = [r.search_many(queries, self.depth) for r in self.retrievers]  # R x Q x depth
        results = []
        for per_query in zip(*runs, strict=True):
            by_id = {hit.passage.id: hit.passage for run in per_query for hit in run}
            fused = reciprocal_rank_fusion([[h.passage.id for h in run] for run in per_query],
                                           self.k)
            top = fused[: _check_k(k, len(fused))]
            results.append([Hit(by_id[i], score, rank) for rank, (i, score) in enumerate(top, 1)])
        return results


# ----------------------------------------------------------------------------- evaluation


def recall_at_k(ranked_ids: Sequence[str], relevant_ids: Iterable[str], k: int) -> float:
    """Fraction of the relevant ids found in the first ``k`` ranked ids."""
    relevant = set(relevant_ids)
    if not relevant:
        raise ValueError("relevant_ids must not be empty")
    return len(relevant & set(ranked_ids[:k])) / len(relevant)


def reciprocal_rank(ranked_ids: Sequence[str], relevant_ids: Iterable[str]) -> float:
    """1 / (1-based rank of the first relevant id), or 0 if none is ranked."""
    relevant = set(relevant_ids)
    for rank, doc_id in enumerate(ranked_ids, 1):
        if doc_id in relevant:
            return 1.0 / rank
    return 0.0


def ranked_source_ids(hits: Sequence[Hit]) -> list[str]:
    """Knowledge-base ids of hits in rank order, each once (chunks map to their passage)."""
    return list(dict.fromkeys(hit.passage.source_id for hit in hits))


def evaluate(
    retriever: Retriever, questions: Sequence[Question], k: Sequence[int] = (1, 3, 5),
    depth: int = 10,
) -> dict[str, float]:
    """Mean recall@k for each k and MRR (first relevant hit within ``depth``).

    Returns e.g. ``{"recall@1": 0.6, "recall@3": 0.8, "recall@5": 0.85, "MRR": 0.7}``.
    """
    if not questions:
        raise ValueError("evaluate needs at least one question, got none")
    ks = [_check_k(value, 10**9) for value in k]
    depth = max(depth, *ks)
    totals = dict.fromkeys([f"recall@{value}" for value in ks] + ["MRR"], 0.0)
    runs = retriever.search_many([q.question for q in questions], depth)
    for question, hits in zip(questions, runs, strict=True):
        ranked = ranked_source_ids(hits)
        for value in ks:
            totals[f"recall@{value}"] += recall_at_k(ranked, question.passage_ids, value)
        totals["MRR"] += reciprocal_rank(ranked, question.passage_ids)
    return {name: total / len(questions) for name, total in totals.items()}


def first_relevant_ranks(
    retriever: Retriever, questions: Sequence[Question], depth: int = 10
) -> list[int | None]:
    """For each question, the 1-based rank of the first passage that answers it (None if it
    is not within ``depth``)."""
    ranks = []
    for question, hits in zip(
        questions, retriever.search_many([q.question for q in questions], depth), strict=True
    ):
        relevant = set(question.passage_ids)
        ranked = ranked_source_ids(hits)
        ranks.append(next((rank for rank, i in enumerate(ranked, 1) if i in relevant), None))
    return ranks


# ----------------------------------------------------------------------------- generation

INSTRUCTION = "Answer the question in one short sentence using the passages above."
# Why no "cite the passage id" instruction: SmolLM2-135M follows it poorly; asked to cite, it
# often writes only an id, or a made-up one, instead of the answer. Passages keep their ids
# in the prompt, ids the model does write are extracted by ``cited_ids``, and
# ``passage_attention`` attributes every answer to the passage it attended to.


def format_passages(passages: Sequence[Passage]) -> str:
    """One line per passage, ``[id] Title: text``, so answers and readers can refer to ids."""
    return "\n".join(f"[{p.id}] {p.title}: {p.text}" for p in passages)


def build_messages(question: str, passages: Sequence[Passage] | None = None) -> list[dict]:
    """Chat messages for the question, after the retrieved passages if any are given.

    No system message: SmolLM2's chat template then inserts its default one.
    """
    check_query(question)
    if passages:
        content = f"{format_passages(passages)}\n\nQuestion: {question}\n{INSTRUCTION}"
    else:
        content = f"Question: {question}\nAnswer the question in one short sentence."
    return [{"role": "user", "content": content}]


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The exact text the model reads: chat template applied, assistant turn opened."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class Generation:
    """A generated answer with the token ids that produced it."""

    prompt: str
    answer: str
    prompt_ids: list[int] = field(repr=False)
    answer_ids: list[int] = field(repr=False)
    seconds: float = 0.0


@torch.no_grad()
def generate(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 8
) -> list[Generation]:
    """Greedy answers for rendered prompts, several at a time (left padding).

    On a CPU a 135M-parameter decoder is bound by per-step overhead, not arithmetic, so a
    batch of 8 costs little more per step than one prompt. ``seconds`` is the batch's
    wall time divided by its size.
    """
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of rendered prompt strings, got one string")
    results: list[Generation] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens must follow every prompt directly
    try:
        for start in range(0, len(prompts), batch_size):
            texts = list(prompts[start : start + batch_size])
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            began = time.perf_counter()
            output = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
            )  # (B, T_prompt + T_new)
            seconds = (time.perf_counter() - began) / len(texts)
            width = batch["input_ids"].shape[1]
            for row, text in enumerate(texts):
                prompt_ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
                new = output[row, width:].tolist()
                stop = [i for i, t in enumerate(new) if t in (tokenizer.eos_token_id,
                                                               tokenizer.pad_token_id)]
                new = new[: stop[0]] if stop else new
                answer = tokenizer.decode(new, skip_special_tokens=True).strip()
                results.append(Generation(text, answer, prompt_ids, new, seconds))
    finally:
        tokenizer.padding_side = side
    return results


_CITATION = re.compile(r"\bp\d{3,}\b")


def cited_ids(answer: str) -> list[str]:
    """Passage ids such as ``p017`` mentioned in an answer, in order, each once."""
    return list(dict.fromkeys(_CITATION.findall(answer)))


def attribute_by_overlap(
    answer: str, passages: Sequence[Passage], question: str = ""
) -> tuple[str | None, list[int]]:
    """The passage an answer's wording rests on: the one sharing the most distinct content
    terms (``tokenize``: lower case, no stopwords) with the answer, not counting terms the
    answer merely copied from the question. Returns ``(id or None, overlaps)`` with one
    count per passage; ``None`` when no passage shares a term (ties: the earliest passage,
    i.e. the better-ranked one). An attribution computed after the fact, not a citation the
    model wrote."""
    if not passages:
        raise ValueError("need at least one passage to attribute the answer to, got none")
    terms = set(tokenize(answer)) - set(tokenize(question)) if answer.strip() else set()
    overlaps = [len(terms & set(tokenize(p.contents))) for p in passages]
    best = int(np.argmax(overlaps))
    return (passages[best].id if overlaps[best] > 0 else None), overlaps


def normalise_answer(text: str) -> list[str]:
    """Lower-case words and numbers, accents dropped; ``30,522`` -> ``30522``, ``0.1`` kept."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    tokens = re.findall(r"\d+(?:[.,]\d+)*|[a-z]+", text)
    return [token.replace(",", "") for token in tokens]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def contains_reference(prediction: str, references: Iterable[str]) -> bool:
    """True if one of ``references`` appears, as a whole-word sequence, in the normalised
    prediction (so ``3`` does not match ``30`` and ``30,522`` matches ``30522``)."""
    words = normalise_answer(prediction)
    return any(_contains(words, normalise_answer(ref)) for ref in references)


def answer_matches(prediction: str, question: Question) -> bool:
    """Normalised containment of the question's reference answer or one of its aliases."""
    return contains_reference(prediction, (question.answer, *question.aliases))


# ----------------------------------------------------------------------------- attention


def passage_token_spans(
    tokenizer, prompt: str, passages: Sequence[Passage]
) -> list[tuple[int, int]]:
    """Token index ranges ``[start, end)`` of each passage's ``[id] Title: text`` line in the
    tokenized prompt (found through the fast tokenizer's character offsets)."""
    offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    spans = []
    for passage in passages:
        line = f"[{passage.id}] {passage.title}: {passage.text}"
        char_start = prompt.find(line)
        if char_start < 0:
            raise ValueError(f"passage {passage.id} does not appear in the prompt")
        char_end = char_start + len(line)
        tokens = [i for i, (s, e) in enumerate(offsets) if s < char_end and e > char_start]
        spans.append((tokens[0], tokens[-1] + 1))
    return spans


@torch.no_grad()
def passage_attention(
    model, tokenizer, generation: Generation, passages: Sequence[Passage]
) -> dict[str, np.ndarray]:
    """How much attention the answer tokens pay to each passage in the prompt.

    Runs prompt + answer once with eager attention and, for every layer, averages the
    attention rows of the answer tokens over heads and answer positions. Returns
    ``per_layer`` ``(L, P)``: the share of attention on each of the P passages, as a fraction
    of all attention on the passages (rows sum to 1); ``mean`` ``(P,)``: its average over
    layers; ``token_share`` ``(P,)``: each passage's share of the passage tokens, what uniform
    attention would give; and ``on_passages`` ``(L,)``: the fraction of all attention that
    lands on the passages at all (the rest goes mostly to the first token, an attention sink).
    """
    if not generation.answer_ids:
        raise ValueError("the generation has no answer tokens to take attention from")
    spans = passage_token_spans(tokenizer, generation.prompt, passages)
    if len(generation.prompt_ids) != len(
        tokenizer(generation.prompt, add_special_tokens=False)["input_ids"]
    ):
        raise ValueError("generation.prompt_ids do not match the tokenized prompt")
    ids = torch.tensor([generation.prompt_ids + generation.answer_ids])  # (1, T)
    attentions = model(ids, output_attentions=True).attentions  # L x (1, H, T, T)
    if not attentions or attentions[0] is None:
        raise ValueError("the model returned no attention maps: load it with eager attention")
    first_answer = len(generation.prompt_ids)
    per_layer = []
    for layer in attentions:
        rows = layer[0, :, first_answer:, :].mean(dim=(0, 1))  # (T,): mean over heads, queries
        per_layer.append(torch.stack([rows[s:e].sum() for s, e in spans]))  # (P,)
    mass = torch.stack(per_layer).double().numpy()  # (L, P)
    lengths = np.array([e - s for s, e in spans], dtype=np.float64)
    return {
        "per_layer": mass / mass.sum(axis=1, keepdims=True),
        "mean": (mass / mass.sum(axis=1, keepdims=True)).mean(axis=0),
        "token_share": lengths / lengths.sum(),
        "on_passages": mass.sum(axis=1),
    }
