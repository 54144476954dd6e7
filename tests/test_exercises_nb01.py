"""Checkers of notebook 01 pass the reference and catch (and name) typical mistakes;
the references equal independent oracles (the course trainer, SmolLM2's tokenizer)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from course_utils import tokenization
from course_utils.exercises import nb01
from course_utils.solutions import nb01 as sol01

pytestmark = pytest.mark.usefixtures("learner_mode")  # checkers judge the given function


def failed_with(result, words: str) -> bool:
    return (not result.passed) and words in result.message


def test_count_pairs_checker():
    assert nb01.check_count_pairs(sol01.count_pairs).passed
    assert failed_with(nb01.check_count_pairs(lambda ids: {p: 1 for p in pairwise(ids)}),
                       "every count is 1")

    def stepping_by_two(ids):
        counts = {}
        for i in range(0, len(ids) - 1, 2):
            counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
        return counts

    assert failed_with(nb01.check_count_pairs(stepping_by_two), "pairs overlap")
    assert failed_with(nb01.check_count_pairs(lambda ids: list(pairwise(ids))), "expected a dict")
    assert failed_with(nb01.check_count_pairs(lambda ids: {(a, a): 1 for a in ids}), "not adjacent")


def test_merge_pair_checker():
    assert nb01.check_merge_pair(sol01.merge_pair).passed

    def no_skip(ids, pair, new_id):  # forgets to jump past the merged pair
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
            else:
                out.append(ids[i])
            i += 1
        return out

    def drops_last(ids, pair, new_id):
        out, i = [], 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    assert failed_with(nb01.check_merge_pair(no_skip), "kept the merged ids too")
    assert failed_with(nb01.check_merge_pair(drops_last), "last id is missing")
    assert failed_with(nb01.check_merge_pair(lambda ids, p, n: list(ids)), "nothing was merged")


def test_not_attempted_is_reported():
    def stub(ids):
        raise NotImplementedError

    assert failed_with(nb01.check_count_pairs(stub), "not attempted")



def test_references_equal_the_course_modules():
    ids = [1, 2, 1, 2, 2, 2, 3]
    assert sol01.count_pairs(ids) == tokenization.count_pairs(ids)
    assert sol01.merge_pair(ids, (2, 2), 9) == tokenization.merge_pair(ids, (2, 2), 9)


def test_train_bpe_reference_equals_the_course_trainer():
    """The textbook reference and the incremental heap trainer learn the same 300 merges."""
    text = tokenization.varied_text(12_000)
    ours = sol01.train_bpe(text, 300, tokenization.pretokenize)
    trained = tokenization.train_bpe(text, 256 + 300)
    assert ours == [(trained.vocab[a], trained.vocab[b]) for a, b in trained.merges]
    assert sol01.train_bpe("ab", 5, tokenization.pretokenize) == [(b"a", b"b")]  # stops early


@pytest.mark.slow
def test_encode_reference_equals_smollm2s_tokenizer():
    from transformers import AutoTokenizer

    from course_utils.models import prepare_decoder

    tokenizer = AutoTokenizer.from_pretrained(prepare_decoder())
    merges, vocab, pretokenize = nb01.real_bpe_files(tokenizer)
    text = tokenization.varied_text(20_000)
    assert sol01.encode(text, merges, vocab, pretokenize) == tokenizer(text, add_special_tokens=False)["input_ids"]
