"""course_utils.rag: BM25, fusion and metrics on hand-computed cases; dense search against
sentence-transformers and brute force; generation and attention shares on the real decoder."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from course_utils import rag

# A three-document corpus small enough to score by hand (k1 = 1.5, b = 0.75):
# N = 3, lengths 2, 3, 1 -> avgdl = 2.
CORPUS = [["cat", "sat"], ["cat", "cat", "dog"], ["bird"]]


def P(i: str, text: str = "text", title: str = "title") -> rag.Passage:
    return rag.Passage(i, title, text)


# ----------------------------------------------------------------------------- BM25


def test_bm25_hand_computed_rare_term():
    # "dog": n = 1 -> idf = ln(1 + 2.5 / 1.5) = ln(8/3). Doc 1: tf 1, |d| = 3 ->
    # norm = 1.5 * (0.25 + 0.75 * 3 / 2) = 2.0625 -> ln(8/3) * 1 * 2.5 / 3.0625.
    scores = rag.BM25(CORPUS).scores(["dog"])
    np.testing.assert_allclose(scores, [0.0, math.log(8 / 3) * 2.5 / 3.0625, 0.0], rtol=1e-12)


def test_bm25_hand_computed_frequent_term_saturates_and_normalises_length():
    # "cat": n = 2 -> idf = ln(1 + 1.5 / 2.5) = ln(1.6).
    # Doc 0: tf 1, |d| = 2 = avgdl -> norm 1.5 -> idf * 2.5 / 2.5 = ln(1.6).
    # Doc 1: tf 2, |d| = 3 -> norm 2.0625 -> idf * 2 * 2.5 / 4.0625.
    scores = rag.BM25(CORPUS).scores(["cat"])
    expected = [math.log(1.6), math.log(1.6) * 5 / 4.0625, 0.0]
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert scores[1] < 2 * scores[0]  # two occurrences count for less than twice one


def test_bm25_sums_terms_ignores_unknown_ones_and_counts_repeats():
    index = rag.BM25(CORPUS)
    both = index.scores(["cat", "dog"])
    np.testing.assert_allclose(both, index.scores(["cat"]) + index.scores(["dog"]), rtol=1e-12)
    np.testing.assert_array_equal(index.scores(["unicorn"]), np.zeros(3))
    np.testing.assert_allclose(index.scores(["dog", "dog"]), 2 * index.scores(["dog"]))


def test_bm25_parameters_b_zero_ignores_length_and_k1_zero_is_binary():
    no_length = rag.BM25([["x"], ["x", "y", "z", "w"]], b=0.0).scores(["x"])
    assert no_length[0] == pytest.approx(no_length[1])
    binary = rag.BM25(CORPUS, k1=0.0).scores(["cat"])
    np.testing.assert_allclose(binary, [math.log(1.6), math.log(1.6), 0.0])
    with pytest.raises(ValueError, match="0 <= b <= 1"):
        rag.BM25(CORPUS, b=1.5)
    with pytest.raises(ValueError, match="at least one document"):
        rag.BM25([])


def test_bm25_equals_rank_bm25_with_its_own_idf_variant():
    # rank_bm25's idf is ln((N - n + 0.5) / (n + 0.5)), negatives floored at 0.25 x mean idf;
    # ours computes that variant itself (nothing is copied into the reference).
    from rank_bm25 import BM25Okapi

    kb = [rag.tokenize(p.contents) for p in rag.load_passages()]
    # a small corpus where "cat" is in 3 of 4 documents: its raw idf is negative -> floored
    small = [["cat", "dog"], ["cat", "cat"], ["cat", "bird", "fish"], ["dog"]]
    for docs, queries in [(kb, ["attention is all you need", "bm25 okapi trec",
                                "gated recurrent unit gru", "the transformer model"]),
                          (small, ["cat", "cat dog", "fish cat"])]:
        ours = rag.BM25(docs, k1=1.2, b=0.75, idf="rank_bm25")
        reference = BM25Okapi(docs, k1=1.2, b=0.75)
        for query in queries:
            terms = rag.tokenize(query) if docs is kb else query.split()
            np.testing.assert_allclose(ours.scores(terms), reference.get_scores(terms), rtol=1e-12, atol=1e-12)
    floored = rag.BM25(small, idf="rank_bm25").idf["cat"]
    assert floored == pytest.approx(BM25Okapi(small).idf["cat"]) and floored > 0
    assert rag.BM25(small).idf["cat"] == pytest.approx(math.log(1 + 1.5 / 3.5))  # Lucene's
    with pytest.raises(ValueError, match="idf must be one of"):
        rag.BM25(small, idf="bm25+")


def test_inverted_index_postings_and_candidates():
    index = rag.BM25(CORPUS)
    docs, tfs = index.postings["cat"]
    assert docs.tolist() == [0, 1] and tfs.tolist() == [1.0, 2.0]
    assert index.postings["bird"][0].tolist() == [2] and index.vocabulary_size == 4
    assert index.candidates(["dog", "bird", "unicorn"]).tolist() == [1, 2]
    assert index.candidates(["unicorn"]).tolist() == []
    # scores read only the postings: documents without a query term stay exactly 0
    assert index.scores(["bird"]).tolist()[:2] == [0.0, 0.0]


def test_zero_score_documents_are_never_ranked():
    index = rag.BM25(CORPUS)
    assert [i for i, _ in index.search(["dog"], 3)] == [1]  # not [1, 0, 2]
    assert index.search(["unicorn"], 3) == []
    # an idf of exactly 0 (rank_bm25's variant, a term in half the documents) scores 0: not ranked
    half = rag.BM25([["a", "x"], ["b"]], idf="rank_bm25")
    assert half.idf["a"] == 0.0 and half.search(["a"], 2) == []


def test_tokenize_lowercases_strips_accents_and_stopwords():
    assert rag.tokenize("The Spärck-Jones IDF of GPT-2!") == ["sparck", "jones", "idf", "gpt", "2"]


def test_bm25_retriever_ranks_only_matching_passages_and_rejects_empty_queries():
    passages = [P("p001", "cats sit on mats"), P("p002", "dogs chase cats"), P("p003", "birds")]
    hits = rag.BM25Retriever(passages).search("dogs", k=2)
    assert [h.passage.id for h in hits] == ["p002"] and hits[0].rank == 1 and hits[0].score > 0
    hits = rag.BM25Retriever(passages).search("cats and dogs", k=3)
    assert [h.passage.id for h in hits] == ["p002", "p001"]
    for bad in ["", "   \n", None]:
        with pytest.raises(ValueError, match="query must be"):
            rag.BM25Retriever(passages).search(bad)
    with pytest.raises(ValueError, match="k must be a positive int"):
        rag.BM25Retriever(passages).search("dogs", k=0)


# ----------------------------------------------------------------------------- fusion


def test_rrf_hand_computed():
    fused = rag.reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "d"]], k=60)
    expected = {"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63 + 1 / 62, "d": 1 / 63}
    assert [i for i, _ in fused] == ["b", "c", "a", "d"]
    for doc_id, score in fused:
        assert score == pytest.approx(expected[doc_id], rel=1e-12)


def test_rrf_k_changes_the_order_and_ties_keep_first_seen():
    # k = 0: a = 1, c = 1/3 + 1/2 = 0.83 -> a now beats c (with k = 60, c beats a).
    assert [i for i, _ in rag.reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "d"]], k=0)] == [
        "b", "a", "c", "d"]
    assert [i for i, _ in rag.reciprocal_rank_fusion([["x", "y"], ["y", "x"]])] == ["x", "y"]


def test_rrf_rejects_repeated_ids_and_bad_k():
    with pytest.raises(ValueError, match="same id twice"):
        rag.reciprocal_rank_fusion([["a", "a"]])
    with pytest.raises(ValueError, match="k must be a number >= 0"):
        rag.reciprocal_rank_fusion([["a"]], k=-1)


class FixedRetriever:
    """Returns preset rankings: lets metrics be checked by hand."""

    name = "fixed"

    def __init__(self, rankings: dict[str, list[str]]):
        self.rankings = rankings

    def search(self, query, k=5):
        return [rag.Hit(P(i), 1.0 / r, r) for r, i in enumerate(self.rankings[query][:k], 1)]

    def search_many(self, queries, k=5):
        return [self.search(q, k) for q in queries]


def test_hybrid_fuses_only_retrieved_candidates():
    # BM25 matched one passage only: the others get nothing from it, dense order decides
    passages = [P("p001", "cats sit on mats"), P("p002", "dogs chase cats"), P("p003", "birds")]
    dense = FixedRetriever({"dogs": ["p003", "p001", "p002"]})
    hits = rag.HybridRetriever([rag.BM25Retriever(passages), dense], depth=3).search("dogs", k=3)
    assert [h.passage.id for h in hits] == ["p002", "p003", "p001"]
    assert hits[0].score == pytest.approx(1 / 61 + 1 / 63) and hits[1].score == pytest.approx(1 / 61)


def test_hybrid_retriever_fuses_by_rank():
    one = FixedRetriever({"q": ["a", "b", "c"]})
    two = FixedRetriever({"q": ["b", "c", "d"]})
    hits = rag.HybridRetriever([one, two], depth=3).search("q", k=4)
    assert [h.passage.id for h in hits] == ["b", "c", "a", "d"]
    assert hits[0].score == pytest.approx(1 / 62 + 1 / 61)
    with pytest.raises(ValueError, match=">= 2 retrievers"):
        rag.HybridRetriever([one])


# ----------------------------------------------------------------------------- metrics


def test_recall_and_reciprocal_rank_hand_computed():
    ranked = ["p5", "p2", "p9", "p1"]
    assert rag.recall_at_k(ranked, ["p2"], 1) == 0.0
    assert rag.recall_at_k(ranked, ["p2"], 2) == 1.0
    assert rag.recall_at_k(ranked, ["p2", "p1"], 3) == 0.5
    assert rag.reciprocal_rank(ranked, ["p9", "p1"]) == pytest.approx(1 / 3)
    assert rag.reciprocal_rank(ranked, ["p7"]) == 0.0
    with pytest.raises(ValueError, match="must not be empty"):
        rag.recall_at_k(ranked, [], 1)


def test_evaluate_hand_computed():
    retriever = FixedRetriever({
        "q1": ["a", "b", "c", "d", "e"],   # relevant a at 1
        "q2": ["x", "y", "b", "z", "w"],   # relevant b at 3
        "q3": ["x", "y", "z", "w", "v"],   # relevant c missing
        "q4": ["c", "x", "d", "y", "z"],   # relevant c, d: c at 1, d at 3
    })
    questions = [rag.Question("1", "q1", ("a",), "-"), rag.Question("2", "q2", ("b",), "-"),
                 rag.Question("3", "q3", ("c",), "-"), rag.Question("4", "q4", ("c", "d"), "-")]
    metrics = rag.evaluate(retriever, questions, k=(1, 3, 5), depth=5)
    assert metrics["recall@1"] == pytest.approx((1 + 0 + 0 + 0.5) / 4)
    assert metrics["recall@3"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert metrics["recall@5"] == pytest.approx(3 / 4)
    assert metrics["MRR"] == pytest.approx((1 + 1 / 3 + 0 + 1) / 4)
    assert rag.first_relevant_ranks(retriever, questions, depth=5) == [1, 3, None, 1]


def test_evaluate_counts_chunks_of_a_passage_once():
    retriever = FixedRetriever({"q": ["p1#1", "p1#2", "p2"]})
    metrics = rag.evaluate(retriever, [rag.Question("1", "q", ("p2",), "-")], k=(2,), depth=3)
    assert metrics == {"recall@2": 1.0, "MRR": 0.5}


# ----------------------------------------------------------------------------- data handling


def test_chunk_text_packs_sentences_with_overlap():
    text = "One two three. Four five six. Seven eight nine. Ten eleven twelve."
    assert rag.chunk_text(text, max_words=6, overlap_sentences=0) == [
        "One two three. Four five six.", "Seven eight nine. Ten eleven twelve."]
    assert rag.chunk_text(text, max_words=6, overlap_sentences=1) == [
        "One two three. Four five six.", "Four five six. Seven eight nine.",
        "Seven eight nine. Ten eleven twelve."]
    assert rag.chunk_text("a b c d e f g.", max_words=3, overlap_sentences=0) == [
        "a b c", "d e f", "g."]
    assert rag.chunk_text(text, max_words=100) == [text]
    with pytest.raises(ValueError, match="max_words must be a positive int"):
        rag.chunk_text(text, max_words=0)


def test_chunk_passages_keeps_ids_of_short_passages():
    passages = [P("p001", "Short one. Two."), P("p002", "A b c. D e f. G h i.")]
    chunks = rag.chunk_passages(passages, max_words=6, overlap_sentences=0)
    assert [c.id for c in chunks] == ["p001", "p002#1", "p002#2"]
    assert {c.source_id for c in chunks} == {"p001", "p002"}


def test_deduplicate_reports_dropped_ids():
    passages = [P("p001", "Same text."), P("p002", "Other."), P("p003", "  same   TEXT. ")]
    kept, dropped = rag.deduplicate(passages)
    assert [p.id for p in kept] == ["p001", "p002"] and dropped == [("p003", "p001")]
    with pytest.raises(ValueError, match="'p001' is used for two different texts"):
        rag.deduplicate([P("p001", "one"), P("p001", "two")])


def test_answer_matching_is_whole_word_and_normalised():
    q = rag.Question("q", "?", ("p1",), "30,522", ("thirty thousand",))
    assert rag.answer_matches("It has 30522 entries.", q)
    assert rag.answer_matches("About Thirty  thousand.", q)
    assert not rag.answer_matches("It has 30,523 entries.", q)
    three = rag.Question("q", "?", ("p1",), "3")
    assert rag.answer_matches("It has 3 key-value heads.", three)
    assert not rag.answer_matches("It has 30 layers.", three)
    assert rag.contains_reference("Karen Spärck Jones", ["Sparck Jones"])
    assert rag.cited_ids("See [p017] and p002, again [p017].") == ["p017", "p002"]


def test_attribute_by_overlap_ignores_question_words_and_reports_none():
    passages = [P("p001", "The LSTM was introduced in 1997.", "LSTM"),
                P("p002", "Hochreiter and Schmidhuber wrote it in Munich.", "Authors")]
    question = "Who introduced the LSTM?"
    best, overlaps = rag.attribute_by_overlap("Hochreiter and Schmidhuber introduced the LSTM.", passages, question)
    assert (best, overlaps) == ("p002", [0, 2])  # 'introduced', 'lstm' come from the question
    assert rag.attribute_by_overlap("It was in 1997.", passages, question) == ("p001", [1, 0])
    assert rag.attribute_by_overlap("I do not know.", passages, question) == (None, [0, 0])
    with pytest.raises(ValueError, match="at least one passage"):
        rag.attribute_by_overlap("x", [], question)


def test_prompt_lists_passages_with_ids():
    messages = rag.build_messages("Who?", [P("p007", "Body.", "Title")])
    assert "[p007] Title: Body." in messages[0]["content"] and "Who?" in messages[0]["content"]
    assert "[p" not in rag.build_messages("Who?")[0]["content"]
    with pytest.raises(ValueError, match="non-empty"):
        rag.build_messages("  ")


# ----------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def kb():
    return rag.load_passages()


@pytest.fixture(scope="module")
def dense(encoder, kb):
    model, tokenizer = encoder
    return rag.DenseRetriever(kb[:40], model, tokenizer)


@pytest.mark.slow
def test_dense_vectors_equal_sentence_transformers(dense, kb):
    from sentence_transformers import SentenceTransformer

    from course_utils.models import encoder_dir

    reference = SentenceTransformer(str(encoder_dir()), device="cpu")
    expected = reference.encode([p.contents for p in kb[:40]], normalize_embeddings=True)
    np.testing.assert_allclose(dense.vectors, expected, atol=1e-5)
    assert reference.max_seq_length == dense.max_length == rag.MINILM_MAX_TOKENS


@pytest.mark.slow
def test_length_sorted_batches_keep_the_input_order(dense, kb):
    """``embed`` runs the texts in batches sorted by length, then puts the sentence vectors
    and the token vectors back in input order: each equals that text embedded alone."""
    texts = [p.contents for p in kb[:7]]
    assert len({len(t) for t in texts}) == len(texts)  # the sort really reorders them
    size = dense.batch_size
    dense.batch_size = 3  # three batches, each sorted by length
    try:
        vectors, tokens = dense.embed(texts, return_tokens=True)
    finally:
        dense.batch_size = size
    for text, vector, token_vectors in zip(texts, vectors, tokens, strict=True):
        alone, alone_tokens = dense.embed([text], return_tokens=True)
        np.testing.assert_allclose(vector, alone[0], atol=1e-5)
        assert token_vectors.shape == alone_tokens[0].shape
        np.testing.assert_allclose(token_vectors, alone_tokens[0], atol=1e-5)


@pytest.mark.slow
def test_faiss_flat_ip_equals_brute_force_cosine(dense):
    queries = ["who invented the LSTM", "what is a perceptron", "softmax overflow"]
    vectors = dense.embed(queries)  # (3, C)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    brute = vectors @ dense.vectors.T  # (3, N): cosines, as vectors are unit length
    for query, row in zip(queries, brute, strict=True):
        hits = dense.search(query, k=5)
        assert [h.passage.id for h in hits] == [dense.passages[i].id for i in np.argsort(-row)[:5]]
        np.testing.assert_allclose([h.score for h in hits], np.sort(row)[::-1][:5], atol=1e-5)


@pytest.mark.slow
def test_long_query_is_truncated_with_a_warning(dense):
    long_query = "attention " * 400
    with pytest.warns(UserWarning, match="longer than the encoder's limit of 256 tokens"):
        vector = dense.embed([long_query])
    ids = dense.tokenizer(long_query)["input_ids"][:255] + [dense.tokenizer.sep_token_id]
    truncated = dense.tokenizer.decode(ids, skip_special_tokens=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 256 tokens exactly: no warning
        np.testing.assert_allclose(vector, dense.embed([truncated]), atol=1e-5)
    with pytest.raises(ValueError, match="query must be"):
        dense.search("")


@pytest.mark.slow
def test_generate_is_greedy_and_attention_shares_are_consistent(decoder, kb):
    model, tokenizer = decoder
    passages = kb[21:23]
    prompt = rag.render_prompt(tokenizer, rag.build_messages("Who introduced the LSTM?", passages))
    (gen,) = rag.generate_answers(model, tokenizer, [prompt], max_new_tokens=6)
    # A hand-written greedy loop (argmax of the last logits) gives the same tokens.
    ids = torch.tensor([gen.prompt_ids])
    with torch.no_grad():
        for _ in range(len(gen.answer_ids)):
            next_id = model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    assert ids[0, len(gen.prompt_ids):].tolist() == gen.answer_ids
    spans = rag.passage_token_spans(tokenizer, prompt, passages)
    for (start, end), p in zip(spans, passages, strict=True):
        assert p.text in tokenizer.decode(gen.prompt_ids[start:end])
    shares = rag.passage_attention(model, tokenizer, gen, passages)
    assert shares["per_layer"].shape == (model.config.num_hidden_layers, 2)
    np.testing.assert_allclose(shares["per_layer"].sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(shares["token_share"].sum(), 1.0)
    assert np.all((shares["on_passages"] > 0) & (shares["on_passages"] < 1))


@pytest.mark.slow
def test_leave_one_out_with_the_cache_equals_rerunning_the_shortened_prompt(decoder, kb):
    model, tokenizer = decoder
    passages = [kb[21], kb[22], kb[25]]
    prompt = rag.render_prompt(tokenizer, rag.build_messages("Who introduced the LSTM?", passages))
    (gen,) = rag.generate_answers(model, tokenizer, [prompt], max_new_tokens=8)
    result = rag.passage_attribution(model, tokenizer, gen, passages)
    shares = rag.passage_attention(model, tokenizer, gen, passages)
    np.testing.assert_allclose(result["mean"], shares["mean"], atol=1e-6)
    for j in range(len(passages)):
        scratch = rag.loo_logprob_from_scratch(model, tokenizer, gen, passages, j)
        assert result["logprob_without"][j] == pytest.approx(scratch, abs=2e-3)
        # the deleted tokens are exactly the prompt that never listed passage j
        others = [p for i, p in enumerate(passages) if i != j]
        shorter = rag.render_prompt(tokenizer, rag.build_messages("Who introduced the LSTM?", others))
        start, end = rag._removal_spans(tokenizer, prompt, passages)[j]
        assert gen.prompt_ids[:start] + gen.prompt_ids[end:] == tokenizer(
            shorter, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([gen.prompt_ids + gen.answer_ids])).logits[0]
    n = len(gen.answer_ids)
    assert result["logprob"] == pytest.approx(rag.answer_logprob(logits[-n - 1 : -1], gen.answer_ids), abs=1e-3)
    np.testing.assert_allclose(result["loo_drop"], result["logprob"] - result["logprob_without"])
    assert result["loo_drop"][0] > 0  # the LSTM passage is the one the answer needs


# ----------------------------------------------------------------------------- long documents


def test_reference_topics_keep_the_language_reference_without_duplicates():
    topics = rag.reference_topics()
    names = {t.id for t in topics}
    assert len(topics) >= 50 and sum(len(t.text.split()) for t in topics) > 20_000
    assert not names & (rag.LIBRARY_TOPICS | rag.AGGREGATE_TOPICS)
    assert "assert" in names and len({"if", "else"} & names) == 1  # pydoc repeats "if" as "else"
    assert all(t.text == " ".join(t.text.split()) and t.title and "***" not in t.text[:5] for t in topics)


def test_contains_span_and_span_judged_evaluation():
    assert rag.contains_span("A  null\noperation here", "a null operation")
    assert not rag.contains_span("a null op", "a null operation")
    q = rag.Question("r1", "q", ("pass",), "null operation")
    chunks = {"q": ["pass#1", "pass#2", "other"]}
    retriever = FixedRetriever(chunks)
    texts = {"pass#1": "nothing here", "pass#2": "it is a null operation", "other": "x"}

    class SpanRetriever(FixedRetriever):
        def search(self, query, k=5):
            return [rag.Hit(P(i, texts[i]), 1.0, r) for r, i in enumerate(self.rankings[query][:k], 1)]

    metrics = rag.evaluate(SpanRetriever(chunks), [q], k=(1, 2), depth=3, judge="span")
    assert metrics == {"recall@1": 0.0, "recall@2": 1.0, "MRR": 0.5}
    # by passage id, chunks of "pass" count as the passage: rank 1
    assert rag.evaluate(retriever, [q], k=(1,), depth=3)["MRR"] == 1.0
    with pytest.raises(ValueError, match="judge must be one of"):
        rag.evaluate(retriever, [q], judge="fuzzy")


def test_recall_within_words_compares_chunk_sizes_at_a_fixed_prompt_size():
    q = rag.Question("r1", "q", ("t",), "needle")
    short = [rag.Hit(P("a", "one two three"), 1, 1), rag.Hit(P("b", "four five needle"), 1, 2)]
    assert rag.recall_within_words([short], [q], 6) == 1.0
    assert rag.recall_within_words([short], [q], 5) == 0.0  # the second chunk does not fit
    first_only = [rag.Hit(P("c", "a b c d e f g needle"), 1, 1)]
    assert rag.recall_within_words([first_only], [q], 3) == 1.0  # the first chunk always counts
    with pytest.raises(ValueError, match="budget must be a positive int"):
        rag.recall_within_words([short], [q], 0)


# ----------------------------------------------------------------------------- reranking


def test_maxsim_hand_computed():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])  # (Tq, C)
    d = np.array([[1.0, 0.0], [0.6, 0.8]])  # (Tp, C)
    # token 1: max(1, 0.6) = 1; token 2: max(0, 0.8) = 0.8 -> mean 0.9
    assert rag.maxsim(q, d) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="non-empty"):
        rag.maxsim(q, np.zeros((0, 2)))


def test_maxsim_reranker_reorders_first_stage_candidates():
    class FakeDense:
        name = "fake"
        token_vectors = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[0.6, 0.8]])]
        position = {"a": 0, "b": 1, "c": 2}

        def embed(self, texts, return_tokens=False):
            return None, [np.array([[0.0, 1.0]]) for _ in texts]  # every query "points up"

    first = FixedRetriever({"q": ["a", "c", "b"]})
    hits = rag.MaxSimReranker(first, FakeDense(), depth=3).search("q", k=3)
    assert [h.passage.id for h in hits] == ["b", "c", "a"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.0])
    only_two = rag.MaxSimReranker(first, FakeDense(), depth=2).search("q", k=3)
    assert [h.passage.id for h in only_two] == ["c", "a"]  # b was beyond the depth

    class NoTokens:
        token_vectors = None

    with pytest.raises(ValueError, match="keep_token_vectors=True"):
        rag.MaxSimReranker(first, NoTokens())


# ----------------------------------------------------------------------------- strict grounding

GROUND = [P("p069", "Alexander Rush of Harvard wrote The Annotated Transformer in 2018.",
            "The Annotated Transformer"),
          P("p070", "BERT was released by Google in 2018.", "BERT")]
RUSH = rag.Question("q", "Who wrote The Annotated Transformer?", ("p069",), "Alexander Rush")


def test_support_test_on_supported_and_unsupported_sentences():
    ok = rag.sentence_support("It was Alexander Rush of Harvard.", GROUND, RUSH.question)
    assert ok.supported and ok.passage_id == "p069" and ok.coverage == 1.0
    made_up = rag.sentence_support("Alexander Rush, a Harvard-trained AI assistant, is credited.",
                                   GROUND, RUSH.question)
    assert not made_up.supported and made_up.coverage < rag.SUPPORT_THRESHOLD
    assert {"ai", "assistant", "credited", "trained"} <= set(made_up.unsupported_terms)
    # one wrong number or name among many supported words is enough to fail
    year = rag.sentence_support("Alexander Rush of Harvard wrote it in 2019.", GROUND, RUSH.question)
    assert year.coverage >= rag.SUPPORT_THRESHOLD and not year.names_found and not year.supported
    name = rag.sentence_support("Alexander Rush of Stanford wrote it in 2018.", GROUND, RUSH.question)
    assert not name.supported
    # words copied from the question need no support; nothing new asserted -> supported
    assert rag.sentence_support("The Annotated Transformer.", GROUND, RUSH.question).supported
    with pytest.raises(ValueError, match="at least one passage"):
        rag.sentence_support("x", [], "")
    with pytest.raises(ValueError, match="threshold must be in"):
        rag.sentence_support("x", GROUND, "", threshold=0)


def test_strict_grounding_needs_the_reference_and_every_sentence_supported():
    good = rag.strict_grounding("Alexander Rush wrote it. He was at Harvard.", RUSH, GROUND)
    assert good.contains_reference and good.all_supported and good.correct
    hallucinated = rag.strict_grounding(
        "Alexander Rush, a Harvard-trained AI assistant, is credited.", RUSH, GROUND)
    assert hallucinated.contains_reference and not hallucinated.correct
    assert hallucinated.weakest.coverage < rag.SUPPORT_THRESHOLD
    wrong = rag.strict_grounding("Google wrote it in 2018.", RUSH, GROUND)
    assert wrong.all_supported and not wrong.contains_reference and not wrong.correct
    empty = rag.strict_grounding("", RUSH, GROUND)
    assert not empty.correct and empty.weakest is None


def test_support_probes_have_known_status():
    kb = rag.load_passages()[:30]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    probes = rag.support_probes(kb, vectors, n=10, seed=0)
    kinds = Counter(kind for kind, _, _ in probes)
    assert kinds["supported"] == kinds["foreign"] == 10 and kinds["swapped"] >= 1
    for kind, sentence, prompt in probes:
        if kind == "supported":
            assert any(sentence in p.text for p in prompt)
        if kind == "foreign":
            assert not any(sentence in p.text for p in prompt)
    with pytest.raises(ValueError, match="one vector each"):
        rag.support_probes(kb, vectors[:5])
