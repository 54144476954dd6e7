"""WordPiece from scratch (``tokenization.wordpiece_encode``) equals MiniLM's tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from course_utils.models import encoder_dir
from course_utils.tokenization import (
    bert_pre_tokenizer,
    varied_text,
    wordpiece_encode,
    wordpiece_word,
)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(encoder_dir())


def test_equals_minilm_on_several_thousand_words(minilm_tokenizer):
    text = varied_text(40_000)
    pre = bert_pre_tokenizer(minilm_tokenizer)
    vocab = minilm_tokenizer.get_vocab()
    words = pre(text)
    assert len(words) > 5_000
    ours = wordpiece_encode(text, vocab, pre)
    assert ours == minilm_tokenizer.tokenize(text)
    assert [vocab[t] for t in ours] == minilm_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "[UNK]" in ours and any(t.startswith("##") for t in ours)  # both rules are exercised


@pytest.mark.parametrize(
    "text",
    ["unaffable tokenization", "x" * 101, "abc☃def ☃", "naïve café", "东京 2024!!", "   ", ""],
)
def test_edge_cases_match_the_library(minilm_tokenizer, text):
    """Over-long words, a character with no piece mid-word (whole word -> [UNK]), accents, CJK."""
    pre = bert_pre_tokenizer(minilm_tokenizer)
    assert wordpiece_encode(text, minilm_tokenizer.get_vocab(), pre) == minilm_tokenizer.tokenize(text)


def test_greedy_longest_match_on_a_toy_vocabulary():
    vocab = {"[UNK]": 0, "un": 1, "una": 2, "##ff": 3, "##able": 4, "##a": 5, "##ffable": 6}
    assert wordpiece_word("unaffable", vocab) == ["una", "##ffable"]  # longest first, not "un"
    assert wordpiece_word("unx", vocab) == ["[UNK]"]  # no piece for "##x": the whole word
    assert wordpiece_word("", vocab) == []


def test_bad_input_is_refused(minilm_tokenizer):
    pre = bert_pre_tokenizer(minilm_tokenizer)
    with pytest.raises(ValueError, match="unk_token"):
        wordpiece_encode("hello", {"hello": 0}, pre)
    with pytest.raises(ValueError, match="must be a str"):
        wordpiece_encode(b"hello", minilm_tokenizer.get_vocab(), pre)
    with pytest.raises(ValueError, match="WordPiece"):
        bert_pre_tokenizer(object())
