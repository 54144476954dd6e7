"""The course-written RAG data in data/: schema, sizes, grounding of every answer."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import REPO
from course_utils import rag

DATA = REPO / "data"


@pytest.fixture(scope="module")
def passages():
    return rag.load_passages(DATA / "knowledge_base.jsonl")


@pytest.fixture(scope="module")
def questions(passages):
    return rag.load_questions(DATA / "questions.jsonl", passages)


def test_knowledge_base_size_and_schema(passages):
    assert len(passages) >= 150
    rows = [json.loads(line) for line in (DATA / "knowledge_base.jsonl").read_text().splitlines()]
    assert all(set(row) == {"id", "title", "topic", "text"} for row in rows)
    assert [p.id for p in passages] == [f"p{i:03d}" for i in range(1, len(passages) + 1)]
    assert len({p.title for p in passages}) == len(passages), "titles must be unique"


def test_passages_are_short_paragraphs_without_duplicates(passages):
    for p in passages:
        words = len(p.text.split())
        sentences = len(rag.split_sentences(p.text))
        assert 25 <= words <= 110, f"{p.id}: {words} words"
        assert 2 <= sentences <= 6, f"{p.id}: {sentences} sentences"
        assert p.text == p.text.strip() and "  " not in p.text, f"{p.id}: stray whitespace"
    kept, dropped = rag.deduplicate(passages)
    assert not dropped and len(kept) == len(passages)


def test_question_set_size_schema_and_types(questions):
    assert len(questions) >= 60
    rows = [json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines()]
    assert all(
        set(row) == {"id", "type", "question", "passage_ids", "answer", "aliases"} for row in rows
    )
    counts = Counter(q.type for q in questions)
    assert counts["keyword"] >= 20 and counts["paraphrase"] >= 20, counts
    assert len({q.question for q in questions}) == len(questions), "repeated question"
    assert any(len(q.passage_ids) > 1 for q in questions), "some questions need 2+ passages"


def test_every_reference_answer_is_in_an_answering_passage(passages, questions):
    by_id = {p.id: p for p in passages}
    for q in questions:
        text = " ".join(by_id[i].contents for i in q.passage_ids)
        refs = (q.answer, *q.aliases)
        assert rag.contains_reference(text, refs), (
            f"{q.id}: neither {q.answer!r} nor an alias occurs in {q.passage_ids}"
        )


def test_paraphrase_questions_share_fewer_words_with_their_passage(passages, questions):
    by_id = {p.id: p for p in passages}

    def overlap(q):
        words = set(rag.tokenize(q.question))
        passage_words = {w for i in q.passage_ids for w in rag.tokenize(by_id[i].contents)}
        return len(words & passage_words) / len(words)

    mean = {t: sum(overlap(q) for q in questions if q.type == t)
            / sum(q.type == t for q in questions) for t in rag.QUESTION_TYPES}
    assert mean["paraphrase"] < 0.5 * mean["keyword"], mean
    assert max(overlap(q) for q in questions if q.type == "paraphrase") <= 0.5


def test_loaders_reject_bad_rows(tmp_path, passages):
    bad = tmp_path / "kb.jsonl"
    bad.write_text('{"id": "p001", "title": "T", "topic": "x"}\n')
    with pytest.raises(ValueError, match="missing field 'text'"):
        rag.load_passages(bad)
    bad.write_text('{"id": "p001", "title": "T", "topic": "x", "text": "a"}\n' * 2)
    with pytest.raises(ValueError, match="duplicate id 'p001'"):
        rag.load_passages(bad)
    q = tmp_path / "q.jsonl"
    row = {"id": "q1", "type": "keyword", "question": "Q?", "passage_ids": ["p999"],
           "answer": "A", "aliases": []}
    q.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"\['p999'\] are not in the knowledge base"):
        rag.load_questions(q, passages)
    q.write_text(json.dumps({**row, "passage_ids": ["p001"], "type": "trivia"}) + "\n")
    with pytest.raises(ValueError, match="type must be one of"):
        rag.load_questions(q, passages)


def test_readme_documents_schema_and_licence():
    text = (DATA / "README.md").read_text()
    for word in ("passage_ids", "aliases", "topic", "paraphrase", "keyword", "MIT"):
        assert word in text


# ----------------------------------------------------------------------------- Language Reference


@pytest.fixture(scope="module")
def topics():
    return rag.reference_topics()


@pytest.fixture(scope="module")
def ref_questions(topics):
    return rag.load_reference_questions(DATA / "pyref_questions.jsonl", topics)


def test_reference_question_set_size_schema_and_types(ref_questions):
    assert len(ref_questions) >= 60
    rows = [json.loads(line) for line in (DATA / "pyref_questions.jsonl").read_text().splitlines()]
    assert all(set(row) == {"id", "type", "question", "topic", "answer"} for row in rows)
    assert [row["id"] for row in rows] == [f"r{i:03d}" for i in range(1, len(rows) + 1)]
    counts = Counter(q.type for q in ref_questions)
    assert counts["keyword"] >= 20 and counts["paraphrase"] >= 20, counts
    assert len({q.question for q in ref_questions}) == len(ref_questions), "repeated question"


def test_every_answer_span_occurs_in_its_topic_on_this_python(topics):
    # read the raw rows (the loader would refuse a missing span before we could name it)
    by_id = {t.id: t for t in topics}
    for line in (DATA / "pyref_questions.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert row["topic"] in by_id, f"{row['id']}: topic {row['topic']!r} not kept"
        assert rag.contains_span(by_id[row["topic"]].text, row["answer"]), (
            f"{row['id']}: span {row['answer']!r} not in topic {row['topic']!r}")
        assert len(row["answer"].split()) >= 2, f"{row['id']}: a one-word span is not specific"
        in_topics = [t.id for t in topics if rag.contains_span(t.text, row["answer"])]
        assert len(in_topics) <= 2, f"{row['id']}: span in {in_topics}: too common to judge by"


def test_reference_paraphrase_questions_share_fewer_words_with_their_topic(topics, ref_questions):
    by_id = {t.id: t for t in topics}

    def overlap(q):
        words = set(rag.tokenize(q.question))
        return len(words & set(rag.tokenize(by_id[q.passage_ids[0]].contents))) / len(words)

    mean = {t: sum(overlap(q) for q in ref_questions if q.type == t)
            / sum(q.type == t for q in ref_questions) for t in rag.QUESTION_TYPES}
    assert mean["paraphrase"] < 0.5 * mean["keyword"], mean


def test_reference_loader_rejects_a_span_not_in_its_topic(tmp_path, topics):
    bad = tmp_path / "r.jsonl"
    row = {"id": "r001", "type": "keyword", "question": "Q?", "topic": "pass",
           "answer": "a loud operation"}
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="is not in topic 'pass' on this Python"):
        rag.load_reference_questions(bad, topics)
    bad.write_text(json.dumps({**row, "topic": "debugger"}) + "\n")
    with pytest.raises(ValueError, match="not a kept reference topic"):
        rag.load_reference_questions(bad, topics)


def test_readme_documents_the_language_reference_questions():
    text = (DATA / "README.md").read_text()
    for word in ("pyref_questions.jsonl", "pydoc_data.topics", "PSF", "span", "reference_topics"):
        assert word in text, word
