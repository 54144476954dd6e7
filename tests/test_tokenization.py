"""course_utils.tokenization: the from-scratch byte-level BPE and the token-budget helpers."""

from __future__ import annotations

import pydoc_data.topics
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.tokenization import (
    BPETokenizer,
    count_pairs,
    count_tokens,
    merge_pair,
    pretokenize,
    printable_bytes,
    tokens_per_character,
    train_bpe,
    train_bpe_naive,
    truncate_to_max_tokens,
)

CORPUS = "\n\n".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics))
TRAIN = CORPUS[:30_000]
HELD_OUT = CORPUS[-10_000:]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return train_bpe(TRAIN, 600)


def test_printable_bytes_is_gpt2s_table():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = printable_bytes()
    assert table == bytes_to_unicode()
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"
    assert len(set(table.values())) == 256  # a bijection: every byte gets its own character


def test_count_pairs_counts_overlapping_pairs():
    assert count_pairs([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert count_pairs([5, 5, 5]) == {(5, 5): 2}
    assert count_pairs([7]) == {} and count_pairs([]) == {}
    assert count_pairs([1, 2], {(1, 2): 3}, weight=4) == {(1, 2): 7}


def test_merge_pair_left_to_right_without_overlap():
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 256) == [256, 3, 256]
    assert merge_pair([5, 5, 5], (5, 5), 300) == [300, 5]
    assert merge_pair([5, 5, 5, 5], (5, 5), 300) == [300, 300]
    assert merge_pair([1, 2, 3], (3, 4), 256) == [1, 2, 3]
    assert merge_pair([], (1, 2), 256) == []


def test_incremental_training_equals_the_textbook_loop():
    text = CORPUS[:8_000]
    fast, naive = train_bpe(text, 400), train_bpe_naive(text, 400)
    assert len(fast.merges) == 144
    assert fast.merges == naive.merges


def test_training_learns_frequent_pieces_first(bpe):
    assert bpe.vocab_size == 600 and len(bpe.merges) == 344
    # The first merge is the most frequent byte pair of the training text.
    words = [list(chunk.encode()) for chunk in pretokenize(TRAIN)]
    counts: dict = {}
    for ids in words:
        count_pairs(ids, counts)
    best = max(counts.values())
    assert counts[bpe.merges[0]] == best
    assert b" the" in bpe.vocab.values()  # the commonest English word, with its space


def test_training_stops_when_no_pair_is_left():
    tokenizer = train_bpe("ab ab ab", 1000)
    assert [tokenizer.vocab[256 + k] for k in range(len(tokenizer.merges))] == [b"ab", b" ab"]


def test_truncated_tokenizer_is_training_to_a_smaller_vocab(bpe):
    small = bpe.truncated(300)
    assert small.merges == train_bpe(TRAIN, 300).merges
    with pytest.raises(ValueError, match="exceeds"):
        bpe.truncated(10_000)


def test_more_merges_compress_better(bpe):
    rates = [tokens_per_character(HELD_OUT, bpe.truncated(v).encode) for v in (256, 300, 450, 600)]
    assert rates == sorted(rates, reverse=True) and rates[0] > 2 * rates[-1]
    assert 0.99 < rates[0] < 1.1  # bytes only: ~1 token per (mostly ASCII) character


def test_encode_known_pieces(bpe):
    ids = bpe.encode(" the")
    assert len(ids) == 1 and bpe.decode(ids) == " the"
    assert bpe.encode("") == []
    assert bpe.token_strings(bpe.encode("é")) in (["é"], ["\\xc3", "\\xa9"])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_pretokenize_covers_every_character(text):
    assert "".join(pretokenize(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=())))  # includes lone surrogates
def test_encode_decode_round_trips_any_string(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


@pytest.mark.parametrize(
    "text", ["Transformers are amazing!", "naïve café 日本語 🤗👍🏽", "x = f(a_b, 1234567)\n\t\r", ""]
)
def test_round_trip_examples(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_decode_of_a_cut_character_uses_replacement():
    tokenizer = BPETokenizer()  # bytes only: "🤗" is 4 tokens
    ids = tokenizer.encode("🤗")
    assert len(ids) == 4 and tokenizer.decode(ids[:1]) == "\ufffd"
    assert tokenizer.decode(ids[:1], errors="ignore") == ""


def test_bad_inputs_raise_value_errors(bpe):
    with pytest.raises(ValueError, match="vocab_size must be an int >= 256"):
        train_bpe(TRAIN, 100)
    with pytest.raises(ValueError, match="non-empty"):
        train_bpe("", 300)
    with pytest.raises(ValueError, match="must be a str"):
        bpe.encode(b"bytes")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        bpe.decode([bpe.vocab_size])
    with pytest.raises(ValueError, match="uses ids not defined"):
        BPETokenizer([(1, 999)])
    with pytest.raises(ValueError, match="at least one character"):
        tokens_per_character("", bpe.encode)
    with pytest.raises(ValueError, match="text must be a str, got int"):
        pretokenize(42)
    with pytest.raises(ValueError, match="text must be a str, got NoneType"):
        count_tokens(None, bpe)


def test_count_tokens_and_empty_input(bpe):
    assert count_tokens("the the", bpe) == len(bpe.encode("the the"))
    for empty in ("", "   \n"):
        with pytest.raises(ValueError, match="text is empty"):
            count_tokens(empty, bpe)


def test_truncation_keeps_a_prefix_and_warns(bpe):
    text = HELD_OUT[:400]
    with pytest.warns(UserWarning, match=r"truncated, dropping the last \d+ tokens"):
        cut = truncate_to_max_tokens(text, bpe, 20)
    assert text.startswith(cut) and len(bpe.encode(cut)) <= 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the text already fits
        assert truncate_to_max_tokens("short", bpe, 20) == "short"
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        truncate_to_max_tokens(text, bpe, 0)
    with pytest.raises(ValueError, match="text is empty"):
        truncate_to_max_tokens("", bpe, 5)


def test_truncation_inside_a_multibyte_character_drops_it():
    tokenizer = BPETokenizer()  # bytes only: each byte is a token
    with pytest.warns(UserWarning):
        assert truncate_to_max_tokens("aé", tokenizer, 2) == "a"


@pytest.mark.slow
def test_budget_helpers_on_the_pretrained_tokenizers(encoder, decoder):
    for tokenizer in (encoder.tokenizer, decoder.tokenizer):
        text = "Tokenization drives cost: every token is paid for, twice if it repeats."
        n = count_tokens(text, tokenizer)
        assert n == len(tokenizer(text, add_special_tokens=False)["input_ids"])
        with pytest.warns(UserWarning, match=f"text has {n} tokens"):
            cut = truncate_to_max_tokens(text, tokenizer, 5)
        # A slice of the original text (not a lower-cased decoding) that re-encodes to 5.
        assert text.startswith(cut) and count_tokens(cut, tokenizer) == 5
