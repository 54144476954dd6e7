"""Used in notebook 09: retrieval-augmented generation, retrieve passages, then answer from them.

Used in notebook 09.

The pieces, in pipeline order:

- data: ``load_passages`` / ``load_questions`` read the course's JSONL files in ``data/``;
  ``reference_topics`` / ``load_reference_questions`` give the second corpus, the Python
  Language Reference shipped with CPython (``pydoc_data.topics``), with answer-span questions;
  ``deduplicate`` drops repeated passages; ``chunk_text`` / ``chunk_passages`` split long
  texts into overlapping, sentence-aligned chunks.
- keyword retrieval: ``tokenize`` + ``BM25`` (Okapi BM25 over an inverted index; Lucene's idf
  or rank_bm25's variant, tested equal to ``rank_bm25``) wrapped as ``BM25Retriever``, which
  never ranks a passage sharing no term with the query.
- dense retrieval: ``DenseRetriever`` embeds with MiniLM (mean pooling over real tokens,
  L2-normalised, so inner product = cosine) into a FAISS ``IndexFlatIP`` (exact search).
- hybrid: ``reciprocal_rank_fusion`` of the retrieved candidates, as ``HybridRetriever``.
- reranking: ``maxsim`` late interaction over MiniLM token vectors, as ``MaxSimReranker``.
- evaluation: ``recall_at_k``, ``reciprocal_rank``, ``evaluate`` (recall@1/3/5, MRR; by
  passage id or by answer span) and ``recall_within_words`` (recall at a fixed prompt size).
- generation: ``build_messages`` (passages with ids), ``generate_answers`` (greedy, batched,
  SmolLM2's chat template), ``answer_matches`` (normalised containment).
- strict grounding: ``sentence_support`` (the support test), ``strict_grounding``, and
  ``support_probes`` (sentences of known status to measure the test on).
- attribution: ``passage_attention`` (attention share per passage) and
  ``passage_attribution`` (attention plus leave-one-out log-probability drops, with a cache).

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

KNOWLEDGE_BASE = "knowledge_base.jsonl"  # file names in course_utils.paths.data_dir()
QUESTIONS = "questions.jsonl"
REFERENCE_QUESTIONS = "pyref_questions.jsonl"

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


def _data_file(path: str | Path) -> Path:
    """A bare file name is looked up in the course's data folder; a path is used as given."""
    from course_utils.paths import data_dir

    path = Path(path)
    return data_dir() / path if path.parent == Path(".") and not path.is_file() else path


def _read_jsonl(path: Path) -> list[dict]:
    path = _data_file(path)
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


# ----------------------------------------------------------------------------- the Language Reference

# pydoc topics that come from the Library Reference (built-in types, str methods, format
# strings, pdb), not the Language Reference; and the two topics pydoc assembles from
# sections that are also topics of their own ("compound" = if/while/for/try/with/def/class…,
# "specialnames" = customization, attribute-access, numeric-types…).
LIBRARY_TOPICS = frozenset(
    "debugger formatstrings string-methods typesfunctions typesmapping typesmethods typesmodules "
    "typesseq typesseq-mutable bltin-code-objects bltin-ellipsis-object bltin-null-object "
    "bltin-type-objects truth specialattrs".split()
)
AGGREGATE_TOPICS = frozenset({"compound", "specialnames"})
NEAR_DUPLICATE_SHARE = 0.8  # a topic this much of whose sentences an earlier one has is dropped


def _long_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) > 6]


def reference_topics() -> list[Passage]:
    """The Python Language Reference as shipped with this CPython (``pydoc_data.topics``,
    PSF licence), one :class:`Passage` per topic: ``id`` the topic name (``"assert"``),
    ``title`` its heading, ``text`` the rest with whitespace collapsed.

    Kept: Language Reference topics only (not :data:`LIBRARY_TOPICS` nor
    :data:`AGGREGATE_TOPICS`); then, shortest first, a topic is dropped when at least
    :data:`NEAR_DUPLICATE_SHARE` of its sentences (over six words) are in topics already kept
    (``if`` repeats ``else``, ``execmodel`` repeats ``naming`` and ``exceptions``). Returned
    in alphabetical order. The text differs between Python versions: answer spans are tested
    against the running one.
    """
    from pydoc_data.topics import topics

    parsed = {}
    for name, raw in topics.items():
        if name in LIBRARY_TOPICS or name in AGGREGATE_TOPICS:
            continue
        lines = raw.strip().splitlines()
        body = lines[2:] if len(lines) > 2 and set(lines[1].strip()) == {"*"} else lines[1:]
        parsed[name] = (lines[0].strip(), " ".join(" ".join(body).split()))
    kept, seen = {}, set()
    for name in sorted(parsed, key=lambda n: (len(parsed[n][1]), n)):
        sentences = _long_sentences(parsed[name][1])
        if sentences and sum(s in seen for s in sentences) >= NEAR_DUPLICATE_SHARE * len(sentences):
            continue
        kept[name] = parsed[name]
        seen.update(sentences)
    return [Passage(name, title, text, "reference") for name, (title, text) in sorted(kept.items())]


def load_reference_questions(
    path: str | Path = REFERENCE_QUESTIONS, topics: Sequence[Passage] | None = None
) -> list[Question]:
    """Read ``pyref_questions.jsonl`` (fields id, type, question, topic, answer): questions
    whose ``answer`` is a verbatim span (whitespace collapsed) of the Language Reference topic
    ``topic``. With ``topics`` (from :func:`reference_topics`), every span must occur in its
    topic. Returned as :class:`Question` with ``passage_ids = (topic,)``."""
    by_id = {p.id: p for p in topics} if topics is not None else None
    questions, seen = [], set()
    for number, row in enumerate(_read_jsonl(Path(path)), 1):
        where = f"{Path(path).name} row {number}"
        _require(row, where, {"id": str, "type": str, "question": str, "topic": str, "answer": str})
        if row["id"] in seen:
            raise ValueError(f"{where}: duplicate id {row['id']!r}")
        if row["type"] not in QUESTION_TYPES:
            raise ValueError(f"{where}: type must be one of {QUESTION_TYPES}, got {row['type']!r}")
        if not row["question"].strip() or not row["answer"].strip():
            raise ValueError(f"{where}: question and answer must be non-empty")
        if by_id is not None:
            if row["topic"] not in by_id:
                raise ValueError(f"{where}: topic {row['topic']!r} is not a kept reference topic")
            if not contains_span(by_id[row["topic"]].text, row["answer"]):
                raise ValueError(f"{where}: answer span {row['answer']!r} is not in topic "
                                 f"{row['topic']!r} on this Python")
        seen.add(row["id"])
        questions.append(Question(row["id"], row["question"], (row["topic"],), row["answer"],
                                  (), row["type"]))
    return questions


def contains_span(text: str, span: str) -> bool:
    """``span`` occurs verbatim in ``text``, whitespace collapsed and case ignored."""
    return " ".join(span.split()).casefold() in " ".join(text.split()).casefold()


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


IDF_VARIANTS = ("lucene", "rank_bm25")


class BM25:
    """Okapi BM25 over an inverted index (term -> postings of ``(document, tf)``).

    score(q, d) = sum over query terms t of
        idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    ``k1`` sets how fast repeated terms saturate; ``b`` how much long documents are
    penalised. A query term repeated twice counts twice (as in rank_bm25 and Lucene).

    Two idf variants (``idf=``):

    - ``"lucene"`` (default): ln(1 + (N - n_t + 0.5) / (n_t + 0.5)), never negative;
    - ``"rank_bm25"`` (the ``rank_bm25.BM25Okapi`` variant): ln((N - n_t + 0.5) / (n_t + 0.5)),
      negative for terms in more than half the documents, and those negative values replaced
      by ``epsilon`` x the mean idf over the vocabulary (computed before the replacement).

    Scoring walks only the postings of the query's terms: a document sharing no term with the
    query is never touched, and :meth:`search` never ranks a document whose score is 0.
    """

    def __init__(
        self, documents: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75,
        idf: str = "lucene", epsilon: float = 0.25,
    ):
        if not documents:
            raise ValueError("BM25 needs at least one document, got none")
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        if idf not in IDF_VARIANTS:
            raise ValueError(f"idf must be one of {IDF_VARIANTS}, got {idf!r}")
        self.k1, self.b, self.idf_variant = k1, b, idf
        self.doc_lengths = np.array([len(doc) for doc in documents], dtype=np.float64)  # (N,)
        self.avg_length = float(self.doc_lengths.mean()) or 1.0
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for index, doc in enumerate(documents):
            for term, tf in Counter(doc).items():
                docs, tfs = postings.setdefault(term, ([], []))
                docs.append(index)
                tfs.append(tf)
        # term -> (document indices (n_t,) int64, term frequencies (n_t,) float64)
        self.postings = {
            term: (np.array(docs, dtype=np.int64), np.array(tfs, dtype=np.float64))
            for term, (docs, tfs) in postings.items()
        }
        n_docs = len(documents)
        doc_freq = {term: len(docs) for term, (docs, _) in self.postings.items()}
        if idf == "lucene":
            self.idf = {t: math.log(1 + (n_docs - n + 0.5) / (n + 0.5)) for t, n in doc_freq.items()}
        else:
            raw = {t: math.log(n_docs - n + 0.5) - math.log(n + 0.5) for t, n in doc_freq.items()}
            floor = epsilon * sum(raw.values()) / len(raw)
            self.idf = {t: (floor if value < 0 else value) for t, value in raw.items()}
        # the length part of the denominator, per document: k1 * (1 - b + b |d| / avgdl)
        self._norm = k1 * (1 - b + b * self.doc_lengths / self.avg_length)  # (N,)

    def __len__(self) -> int:
        return len(self.doc_lengths)

    @property
    def vocabulary_size(self) -> int:
        return len(self.postings)

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for the query: ``(N,)`` float64 (0 where no term
        matches). Only the postings of the query's terms are read."""
        total = np.zeros(len(self), dtype=np.float64)
        for term in query_terms:
            if term not in self.postings:  # a term no document contains adds nothing
                continue
            docs, tf = self.postings[term]  # (n_t,), (n_t,)
            total[docs] += self.idf[term] * tf * (self.k1 + 1) / (tf + self._norm[docs])
        return total

    def candidates(self, query_terms: Sequence[str]) -> np.ndarray:
        """Indices of the documents containing at least one query term, ascending."""
        found = [self.postings[t][0] for t in set(query_terms) if t in self.postings]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def search(self, query_terms: Sequence[str], k: int) -> list[tuple[int, float]]:
        """The best ``k`` ``(document index, score)`` pairs with a score > 0, best first
        (ties: corpus order). Fewer than ``k`` when fewer documents match."""
        scores = self.scores(query_terms)
        matched = self.candidates(query_terms)
        matched = matched[scores[matched] > 0]  # an idf of exactly 0 can still give 0
        order = matched[np.argsort(-scores[matched], kind="stable")][:k]
        return [(int(i), float(scores[i])) for i in order]


def _check_k(k: object, limit: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return min(k, limit)


class Retriever(Protocol):
    name: str

    def search(self, query: str, k: int = 5) -> list[Hit]: ...

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]: ...


class BM25Retriever:
    """Keyword retrieval: BM25 over ``tokenize(title + text)``; only matching passages rank."""

    name = "keyword (BM25)"

    def __init__(
        self, passages: Sequence[Passage], k1: float = 1.5, b: float = 0.75, idf: str = "lucene"
    ):
        self.passages = list(passages)
        self.index = BM25([tokenize(p.contents) for p in self.passages], k1=k1, b=b, idf=idf)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """Passages sharing at least one term with the query, best first; at most ``k``."""
        terms = tokenize(check_query(query))
        k = _check_k(k, len(self.passages))
        return [Hit(self.passages[i], score, rank)
                for rank, (i, score) in enumerate(self.index.search(terms, k), 1)]

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        return [self.search(query, k) for query in queries]


# ----------------------------------------------------------------------------- dense search


class DenseRetriever:
    """Dense retrieval: MiniLM sentence vectors in a FAISS ``IndexFlatIP``.

    Vectors are mean-pooled over real tokens and L2-normalised, so the inner product FAISS
    computes is the cosine similarity. ``IndexFlatIP`` is exact brute force: for ~10^2-10^5
    passages it is fast enough and has no recall loss to explain away.

    With ``keep_token_vectors=True`` the same forward pass also keeps each passage's
    L2-normalised token vectors (``token_vectors[i]``: ``(T_i, C)``, special tokens dropped)
    for a late-interaction reranker (:class:`MaxSimReranker`): no extra encoder work.
    """

    name = "dense (MiniLM + FAISS)"

    def __init__(
        self, passages: Sequence[Passage], model, tokenizer, batch_size: int = 32,
        max_length: int | None = MINILM_MAX_TOKENS, keep_token_vectors: bool = False,
    ):
        import faiss

        self.passages = list(passages)
        if not self.passages:
            raise ValueError("DenseRetriever needs at least one passage, got none")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
        self.max_length = min(max_length or limit, limit)
        self.position = {p.id: i for i, p in enumerate(self.passages)}
        texts = [p.contents for p in self.passages]
        if keep_token_vectors:
            self.vectors, self.token_vectors = self.embed(texts, return_tokens=True)  # (N, C)
        else:
            self.vectors, self.token_vectors = self.embed(texts), None  # (N, C)
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], return_tokens: bool = False):
        """``(N, C)`` float32 unit vectors; inputs over ``max_length`` tokens are truncated
        with a warning (the model never saw longer inputs in training). With
        ``return_tokens``, also a list of ``(T_i, C)`` unit token vectors (no [CLS]/[SEP])."""
        texts = list(texts)
        lengths = [len(ids) for ids in self.tokenizer(texts, verbose=False)["input_ids"]]
        too_long = [n for n in lengths if n > self.max_length]
        if too_long:
            warnings.warn(
                f"{len(too_long)} input(s) longer than the encoder's limit of {self.max_length} "
                f"tokens (longest: {max(too_long)}): truncated to the first {self.max_length}.",
                UserWarning, stacklevel=2,
            )
        # Batches of similar lengths pad less (length bucketing): about a sixth fewer
        # tokens through the model for the course's chunks. Results go back in input order.
        order = sorted(range(len(texts)), key=lambda i: (min(lengths[i], self.max_length), i))
        vectors = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        tokens: list[np.ndarray | None] = [None] * len(texts)
        special = torch.tensor(sorted(set(self.tokenizer.all_special_ids)))
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state  # (B, T, C)
            vectors[rows] = l2_normalize(mean_pool(hidden, batch["attention_mask"])).numpy()  # (B, C)
            if return_tokens:
                unit = l2_normalize(hidden)  # (B, T, C)
                keep = ~torch.isin(batch["input_ids"], special)  # (B, T): no [CLS]/[SEP]/[PAD]
                for i, row, row_keep in zip(rows, unit, keep, strict=True):
                    tokens[i] = row[row_keep].numpy().astype(np.float32)  # (T_i, C)
        return (vectors, tokens) if return_tokens else vectors

    def search(self, query: str, k: int = 5) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """Embed all queries in batches, then one FAISS search: ``(Q, C)`` -> ``(Q, k)``."""
        return self.search_vectors(self.embed([check_query(query) for query in queries]), k)

    def search_vectors(self, vectors: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """The FAISS search for query vectors already embedded: ``(Q, C)`` -> Q hit lists."""
        k = _check_k(k, len(self.passages))
        scores, indices = self.index.search(vectors, k)  # (Q, k) each
        return [
            [Hit(self.passages[i], float(s), rank)
             for rank, (s, i) in enumerate(zip(row_s, row_i, strict=True), 1)]
            for row_s, row_i in zip(scores, indices, strict=True)
        ]


def maxsim(query_tokens: np.ndarray, passage_tokens: np.ndarray) -> float:
    """Late interaction (ColBERT's MaxSim): each query token's best cosine with any passage
    token, averaged over query tokens. ``(Tq, C)``, ``(Tp, C)`` unit vectors -> a float."""
    if query_tokens.ndim != 2 or passage_tokens.ndim != 2 or not len(query_tokens) or not len(
        passage_tokens
    ):
        raise ValueError(
            f"maxsim needs two non-empty (T, C) arrays, got shapes {query_tokens.shape} and "
            f"{passage_tokens.shape}"
        )
    return float((query_tokens @ passage_tokens.T).max(axis=1).mean())  # (Tq, Tp) -> (Tq,)


class MaxSimReranker:
    """Second stage: re-order a first stage's top ``depth`` candidates by :func:`maxsim`
    between the query's and each candidate's MiniLM token vectors (kept by ``dense`` at
    index time, so a query costs one short encoder pass plus ``depth`` small matrix
    products; with ``first_stage=dense`` that one pass serves both stages). Ties keep the
    first stage's order."""

    def __init__(self, first_stage: Retriever, dense: DenseRetriever, depth: int = 20):
        if dense.token_vectors is None:
            raise ValueError("the DenseRetriever must be built with keep_token_vectors=True")
        self.first_stage, self.dense, self.depth = first_stage, dense, _check_k(depth, 10**9)
        self.name = f"{first_stage.name} + MaxSim rerank"

    def search(self, query: str, k: int = 5) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        queries = [check_query(query) for query in queries]
        k = _check_k(k, 10**9)
        vectors, query_tokens = self.dense.embed(queries, return_tokens=True)
        if self.first_stage is self.dense:  # one encoder pass gives both the vector and tokens
            runs = self.dense.search_vectors(vectors, max(self.depth, k))
        else:
            runs = self.first_stage.search_many(queries, max(self.depth, k))
        results = []
        for hits, q_tokens in zip(runs, query_tokens, strict=True):
            scored = [(maxsim(q_tokens, self.dense.token_vectors[self.dense.position[h.passage.id]]),
                       h.rank, h.passage) for h in hits[: self.depth]]
            scored.sort(key=lambda item: (-item[0], item[1]))
            results.append([Hit(p, s, rank) for rank, (s, _, p) in enumerate(scored[:k], 1)])
        return results


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


JUDGES = ("passage", "span")


def _relevance(question: Question, hits: Sequence[Hit], judge: str) -> tuple[list[str], set[str]]:
    """(ranked ids, relevant ids) for one question under a relevance ``judge``:
    ``"passage"``: knowledge-base ids (chunks map to their passage), relevant = the
    question's ``passage_ids``; ``"span"``: chunk ids, relevant = the chunks that contain the
    question's answer span (:func:`contains_span`): the test for long documents, where a
    chunk is useful only if the answer is whole in it."""
    if judge == "passage":
        return ranked_source_ids(hits), set(question.passage_ids)
    if judge == "span":
        ids = [hit.passage.id for hit in hits]
        return ids, {h.passage.id for h in hits if contains_span(h.passage.contents, question.answer)}
    raise ValueError(f"judge must be one of {JUDGES}, got {judge!r}")


def evaluate(
    retriever: Retriever, questions: Sequence[Question], k: Sequence[int] = (1, 3, 5),
    depth: int = 10, judge: str = "passage", runs: Sequence[Sequence[Hit]] | None = None,
) -> dict[str, float]:
    """Mean recall@k for each k and MRR (first relevant hit within ``depth``).

    With ``judge="span"`` (long documents) recall@k is 1 when a chunk in the top k contains
    the answer span. ``runs`` (one hit list per question) reuses searches already made.
    Returns e.g. ``{"recall@1": 0.6, "recall@3": 0.8, "recall@5": 0.85, "MRR": 0.7}``.
    """
    if not questions:
        raise ValueError("evaluate needs at least one question, got none")
    ks = [_check_k(value, 10**9) for value in k]
    depth = max(depth, *ks)
    totals = dict.fromkeys([f"recall@{value}" for value in ks] + ["MRR"], 0.0)
    if runs is None:
        runs = retriever.search_many([q.question for q in questions], depth)
    for question, hits in zip(questions, runs, strict=True):
        ranked, relevant = _relevance(question, hits[:depth], judge)
        for value in ks:
            if judge == "span":
                totals[f"recall@{value}"] += float(bool(relevant & set(ranked[:value])))
            else:
                totals[f"recall@{value}"] += recall_at_k(ranked, relevant, value)
        totals["MRR"] += reciprocal_rank(ranked, relevant)
    return {name: total / len(questions) for name, total in totals.items()}


def recall_within_words(
    runs: Sequence[Sequence[Hit]], questions: Sequence[Question], budget: int
) -> float:
    """Share of questions whose answer span is in a chunk among the top chunks that fit in
    ``budget`` words together (always at least the first chunk): recall at a fixed prompt
    size, so that large and small chunks compete on equal terms (recall@k with k fixed
    favours large chunks, which simply put more text in the prompt)."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int (words), got {budget!r}")
    if len(runs) != len(questions) or not questions:
        raise ValueError(f"need one run per question, got {len(runs)} runs, {len(questions)} questions")
    found = 0
    for question, hits in zip(questions, runs, strict=True):
        used = 0
        for index, hit in enumerate(hits):
            used += len(hit.passage.text.split())
            if index > 0 and used > budget:
                break
            if contains_span(hit.passage.contents, question.answer):
                found += 1
                break
    return found / len(questions)


def first_relevant_ranks(
    retriever: Retriever, questions: Sequence[Question], depth: int = 10, judge: str = "passage",
    runs: Sequence[Sequence[Hit]] | None = None,
) -> list[int | None]:
    """For each question, the 1-based rank of the first passage that answers it (None if it
    is not within ``depth``). ``runs`` reuses searches already made."""
    if runs is None:
        runs = retriever.search_many([q.question for q in questions], depth)
    ranks = []
    for question, hits in zip(questions, runs, strict=True):
        ranked, relevant = _relevance(question, hits[:depth], judge)
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
def generate_answers(
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


def _attention_shares(attentions, first_answer: int, spans) -> dict[str, np.ndarray]:
    if not attentions or attentions[0] is None:
        raise ValueError("the model returned no attention maps: load it with eager attention")
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


def answer_logprob(logits: torch.Tensor, answer_ids: Sequence[int]) -> float:
    """Sum of log p(answer token | everything before it). ``logits``: ``(T, V)``, the
    positions that predict the answer tokens (one row per answer token)."""
    if logits.shape[0] != len(answer_ids) or not len(answer_ids):
        raise ValueError(f"need one logit row per answer token, got {logits.shape[0]} rows for "
                         f"{len(answer_ids)} tokens")
    logp = torch.log_softmax(logits.double(), dim=-1)  # (T, V)
    return float(logp[torch.arange(len(answer_ids)), torch.tensor(list(answer_ids))].sum())


def _check_generation(tokenizer, generation: Generation) -> None:
    if not generation.answer_ids:
        raise ValueError("the generation has no answer tokens to take attention from")
    if len(generation.prompt_ids) != len(
        tokenizer(generation.prompt, add_special_tokens=False)["input_ids"]
    ):
        raise ValueError("generation.prompt_ids do not match the tokenized prompt")


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
    _check_generation(tokenizer, generation)
    spans = passage_token_spans(tokenizer, generation.prompt, passages)
    ids = torch.tensor([generation.prompt_ids + generation.answer_ids])  # (1, T)
    attentions = model(ids, output_attentions=True).attentions  # L x (1, H, T, T)
    return _attention_shares(attentions, len(generation.prompt_ids), spans)


def _removal_spans(tokenizer, prompt: str, passages: Sequence[Passage]) -> list[tuple[int, int]]:
    """Token ranges that delete passage j's line *and one line break* (the one after it for
    the first passage, before it otherwise), so the prompt left is exactly the prompt that
    never listed passage j."""
    offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    spans = []
    for j, passage in enumerate(passages):
        line = f"[{passage.id}] {passage.title}: {passage.text}"
        start = prompt.find(line)
        if start < 0:
            raise ValueError(f"passage {passage.id} does not appear in the prompt")
        end = start + len(line)
        start, end = (start, end + 1) if j == 0 else (start - 1, end)
        tokens = [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
        spans.append((tokens[0], tokens[-1] + 1))
    return spans


@torch.no_grad()
def passage_attribution(
    model, tokenizer, generation: Generation, passages: Sequence[Passage]
) -> dict[str, np.ndarray | float]:
    """Two attributions of an answer to the P passages of its prompt, from one forward pass
    with attention maps and a KV cache, plus P shorter ones.

    - attention (``passage_attention``'s keys: ``per_layer``, ``mean``, ``token_share``,
      ``on_passages``);
    - causal, leave one out: ``logprob`` is log p(answer | full prompt); ``logprob_without``
      ``(P,)`` the same with passage j's line deleted from the prompt; ``loo_drop`` ``(P,)``
      = ``logprob - logprob_without``: how much the answer depended on passage j. The prompt
      before passage j is unchanged, so its keys and values are reused from the cache
      (cropped to where passage j starts) and only the tokens after it are run again: the
      result equals running the shortened prompt from scratch (a test checks it).
    """
    from transformers import DynamicCache

    _check_generation(tokenizer, generation)
    spans = passage_token_spans(tokenizer, generation.prompt, passages)
    removals = _removal_spans(tokenizer, generation.prompt, passages)
    ids = generation.prompt_ids + generation.answer_ids
    first_answer, n_answer = len(generation.prompt_ids), len(generation.answer_ids)
    cache = DynamicCache()
    out = model(torch.tensor([ids]), output_attentions=True, past_key_values=cache, use_cache=True)
    result: dict[str, np.ndarray | float] = dict(
        _attention_shares(out.attentions, first_answer, spans))
    full = answer_logprob(out.logits[0, first_answer - 1 : -1], generation.answer_ids)
    cache = out.past_key_values
    without = np.zeros(len(passages))
    # latest passage first: each crop only shortens the cache
    for j in sorted(range(len(passages)), key=lambda j: -removals[j][0]):
        start, end = removals[j]
        cache.crop(start - cache.get_seq_length())  # transformers 5: a negative count to drop
        rest = torch.tensor([ids[end:]])  # (1, T - end)
        logits = model(rest, past_key_values=cache, use_cache=True).logits[0]  # (T - end, V)
        without[j] = answer_logprob(logits[-n_answer - 1 : -1], generation.answer_ids)
    result.update(logprob=full, logprob_without=without, loo_drop=full - without)
    return result


def loo_logprob_from_scratch(
    model, tokenizer, generation: Generation, passages: Sequence[Passage], j: int
) -> float:
    """log p(answer | prompt without passage j), the prompt re-run in full: the slow
    reference :func:`passage_attribution` is tested against."""
    start, end = _removal_spans(tokenizer, generation.prompt, passages)[j]
    ids = generation.prompt_ids[:start] + generation.prompt_ids[end:] + generation.answer_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    n = len(generation.answer_ids)
    return answer_logprob(logits[-n - 1 : -1], generation.answer_ids)


# ----------------------------------------------------------------------------- strict grounding

# A sentence is supported when at least this share of its content terms (``tokenize``, minus
# the terms it copies from the question, minus pronouns) occur in ONE passage of the prompt, and every
# number and every capitalised word (a name, after the sentence's first word) in it occurs
# in that passage. Notebook 09 measures the rule on sentences of known
# status (a passage's own sentences; sentences of the nearest other passages; sentences with
# one name or number swapped) before applying it to answers.
SUPPORT_THRESHOLD = 0.75
# pronouns refer back to what the passage names; they need no support of their own
PRONOUNS = frozenset("he she him her his hers himself herself itself themselves me my us our".split())


@dataclass(frozen=True)
class Support:
    """How well one sentence is supported by the best single passage of a prompt."""

    sentence: str
    coverage: float  # share of the sentence's content terms found in the best passage
    passage_id: str | None  # the best passage (None: no passage shares a term)
    unsupported_terms: tuple[str, ...]  # content terms of the sentence missing from it
    names_found: bool  # every number and capitalised word of the sentence is in that passage
    supported: bool


def sentence_support(
    sentence: str, passages: Sequence[Passage], question: str = "",
    threshold: float = SUPPORT_THRESHOLD,
) -> Support:
    """The support test for one sentence against the passages in the prompt (see
    :data:`SUPPORT_THRESHOLD`). A sentence with no content term left after removing the
    question's (``"Yes."``, a restated question) has coverage 1: it asserts nothing new."""
    if not passages:
        raise ValueError("need at least one passage to test support against, got none")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    terms = set(tokenize(sentence)) - set(tokenize(question)) - PRONOUNS
    if not terms:
        return Support(sentence, 1.0, None, (), True, True)
    words = sentence.split()
    names = {t for w in words[1:] if w[:1].isupper() or any(c.isdigit() for c in w)
             for t in tokenize(w)} & terms
    best, best_cover, best_missing = None, -1.0, terms
    for passage in passages:
        found = terms & set(tokenize(passage.contents))
        cover = len(found) / len(terms)
        if cover > best_cover:  # ties: the earlier passage
            best, best_cover, best_missing = passage, cover, terms - found
    names_ok = not (names & best_missing) and not any(t.isdigit() for t in best_missing)
    passage_id = best.id if best_cover > 0 else None
    return Support(sentence, best_cover, passage_id, tuple(sorted(best_missing)), names_ok,
                   best_cover >= threshold and names_ok)


@dataclass(frozen=True)
class Grounding:
    """Strict grading of one answer: reference found AND every sentence supported."""

    contains_reference: bool
    sentences: tuple[Support, ...]
    all_supported: bool
    correct: bool

    @property
    def weakest(self) -> Support | None:
        """The least-supported sentence (None for an empty answer)."""
        return min(self.sentences, key=lambda s: s.coverage, default=None)


def strict_grounding(
    answer: str, question: Question, passages: Sequence[Passage],
    threshold: float = SUPPORT_THRESHOLD,
) -> Grounding:
    """Grade an answer strictly: it must contain the reference (:func:`answer_matches`) and
    each of its sentences must pass :func:`sentence_support` against the prompt's passages.
    An empty answer is not correct."""
    sentences = tuple(sentence_support(s, passages, question.question, threshold)
                      for s in split_sentences(answer))
    contains = answer_matches(answer, question)
    supported = bool(sentences) and all(s.supported for s in sentences)
    return Grounding(contains, sentences, supported, contains and supported)


def support_probes(
    passages: Sequence[Passage], vectors: np.ndarray, n: int = 60, seed: int = 0
) -> list[tuple[str, str, list[Passage]]]:
    """Sentences of known support status to measure :func:`sentence_support` on.

    For ``n`` passages (seeded choice), one sentence ``s`` of passage ``p`` and a prompt of
    ``p`` plus its two nearest passages by ``vectors`` (``(N, C)`` unit rows) gives three probes:
    ``("supported", s, [p, near1, near2])``; ``("foreign", s, [near1, near2, near3])``: the
    same sentence without its passage, next to the passages most like it; and
    ``("swapped", s', [p, near1, near2])`` where ``s'`` has one number or capitalised name
    (not its first word) replaced by one of the same kind from the nearest passage that has
    one ``p`` does not contain (omitted when there is none). Returns ``(kind, sentence, prompt passages)`` triples.
    """
    if len(passages) != len(vectors) or len(passages) < 5:
        raise ValueError(f"need >= 5 passages with one vector each, got {len(passages)} "
                         f"passages and {len(vectors)} vectors")
    rng = np.random.default_rng(seed)
    similarity = vectors @ vectors.T  # (N, N)
    probes = []
    for i in sorted(rng.choice(len(passages), size=min(n, len(passages)), replace=False)):
        p = passages[i]
        near = [passages[j] for j in np.argsort(-similarity[i], kind="stable") if j != i][:3]
        sentences = split_sentences(p.text)
        s = sentences[int(rng.integers(len(sentences)))]
        probes.append(("supported", s, [p, near[0], near[1]]))
        probes.append(("foreign", s, near))
        own = set(tokenize(p.contents))
        words = s.split()
        slots = [k for k, w in enumerate(words) if k > 0 and re.fullmatch(r"[A-Z][a-z]+|\d+", w.strip(".,;:()"))]
        for other in near:
            pool = [w.strip(".,;:()") for w in other.text.split()[1:]
                    if re.fullmatch(r"[A-Z][a-z]+|\d+", w.strip(".,;:()"))]
            pool = [w for w in pool if w.lower() not in own and w.lower() not in STOPWORDS]
            if slots and pool:
                k = slots[int(rng.integers(len(slots)))]
                old = words[k].strip(".,;:()")
                same_kind = [w for w in pool if w.isdigit() == old.isdigit()] or pool
                new = same_kind[int(rng.integers(len(same_kind)))]
                swapped = words[:k] + [words[k].replace(old, new)] + words[k + 1 :]
                probes.append(("swapped", " ".join(swapped), [p, near[0], near[1]]))
                break
    return probes
