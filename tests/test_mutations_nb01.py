"""Mutation tests for notebook 01's checkers: typical wrong BPE code fails with a specific diagnosis."""

from __future__ import annotations

from itertools import pairwise

import pytest
from mutation import Mutant, run_mutant, run_reference

from course_utils.exercises import nb01 as checkers
from course_utils.solutions import nb01 as solutions

pytestmark = pytest.mark.slow  # the encode checker loads SmolLM2's tokenizer

MODULE = "nb01"


def _stepping_by_two(ids):
    counts = {}
    for i in range(0, len(ids) - 1, 2):
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def _merge_no_skip(ids, pair, new_id):
    out = []
    for i, current in enumerate(ids):
        out.append(new_id if i + 1 < len(ids) and (current, ids[i + 1]) == pair else current)
    return out


def _merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _slip_train(**switches):
    return lambda text, n, pretokenize: checkers._slip_trainer(text, n, pretokenize, **switches)


def _train_off_by_one(text, n, pretokenize):
    return solutions.train_bpe(text, n - 1, pretokenize) if n > 1 else []


def _train_ids(text, n, pretokenize):  # forgets to turn the ids back into bytes
    merges = solutions.train_bpe(text, n, pretokenize)
    table = {bytes([b]): b for b in range(256)}
    out = []
    for k, (left, right) in enumerate(merges):
        out.append((table[left], table[right]))
        table[left + right] = 256 + k
    return out


def _slip_encode(**switches):
    return lambda text, merges, vocab, pretokenize: checkers._slip_encode(text, merges, vocab, pretokenize, **switches)


def _encode_rank_ids(text, merges, vocab, pretokenize):  # ids from merge ranks, not the vocab
    pieces = solutions.encode(text, merges, vocab, pretokenize)
    return [i + 10**6 for i in pieces]


MUTANTS = [
    Mutant("check_count_pairs", "every count 1", lambda ids: {p: 1 for p in pairwise(ids)}, expect="every count is 1"),
    Mutant("check_count_pairs", "pairs do not overlap", _stepping_by_two, expect="pairs overlap"),
    Mutant("check_count_pairs", "a list, not a dict", lambda ids: list(pairwise(ids)), expect="expected a dict"),
    Mutant("check_count_pairs", "pairs of one id", lambda ids: {(a, a): 1 for a in ids}, expect="not adjacent"),
    Mutant("check_merge_pair", "no skip after a merge", _merge_no_skip, expect="kept the merged ids too"),
    Mutant("check_merge_pair", "last id dropped", _merge_drops_last, expect="last id is missing"),
    Mutant("check_merge_pair", "nothing merged", lambda ids, p, n: list(ids), expect="nothing was merged"),
    Mutant("check_train_bpe", "no pre-tokenization", _slip_train(chunks=False), expect="cross chunk boundaries"),
    Mutant("check_train_bpe", "pairs counted without overlap", _slip_train(overlap=False), expect="without overlap"),
    Mutant("check_train_bpe", "chunk frequencies ignored", _slip_train(weights=False), expect="counted once"),
    Mutant("check_train_bpe", "first occurrence only", _slip_train(every=False), expect="first occurrence"),
    Mutant("check_train_bpe", "ties to the largest pair", _slip_train(tie_smallest=False), expect="tie"),
    Mutant("check_train_bpe", "one merge short", _train_off_by_one, expect="off by one"),
    Mutant("check_train_bpe", "ids instead of bytes", _train_ids, expect="(left bytes, right bytes)"),
    Mutant("check_bpe_encode", "no pre-tokenization", _slip_encode(chunks=False), expect="crossed chunk boundaries"),
    Mutant("check_bpe_encode", "leftmost pair first", _slip_encode(order="leftmost"), expect="leftmost"),
    Mutant("check_bpe_encode", "latest merge first", _slip_encode(order="latest"), expect="most recently learned"),
    Mutant("check_bpe_encode", "most frequent pair first", _slip_encode(order="frequent"), expect="most frequent pair"),
    Mutant("check_bpe_encode", "ids not looked up in vocab", _encode_rank_ids, expect="not in vocab"),
]
REFERENCES = {
    "check_count_pairs": solutions.count_pairs,
    "check_merge_pair": solutions.merge_pair,
    "check_train_bpe": solutions.train_bpe,
    "check_bpe_encode": solutions.encode,
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])


def test_an_infinite_loop_is_stopped():
    def forever(text, n, pretokenize):
        while True:
            pass

    from mutation import learner_mode

    with learner_mode():
        result = checkers.check_train_bpe(forever)
    assert not result.passed and "stopped after" in result.message
