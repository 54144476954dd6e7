"""Checkers for notebook 01 (tokenization).

- ``check_count_pairs`` / ``check_merge_pair``: the two steps of the BPE merge loop (01.1, 01.2).
- ``check_train_bpe``: the learner's whole merge loop (01.3, piece ``bpe``) must learn exactly
  the merges of the course trainer (``course_utils.tokenization.train_bpe``) on several texts.
- ``check_bpe_encode``: the learner's ``encode`` (01.3), given SmolLM2's real merges and
  vocabulary, must give exactly the ids of SmolLM2's own tokenizer (the Rust library).

Wrong answers are diagnosed by comparing with typical slips computed on the same input (no
pre-tokenization, pairs counted without overlap, chunk frequencies ignored, only the first
occurrence merged, the leftmost or most frequent pair applied first, ...). Nothing here
prints a solution.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from functools import cache

from course_utils import tokenization
from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb01 as solutions

PAIR_CASES = [
    [1, 2, 3, 1, 2],
    [5, 5, 5],  # overlapping pairs
    [7],  # a single token has no pair
    [],
    list(b"hello hello"),
]

MERGE_CASES = [
    ([1, 2, 3, 1, 2], (1, 2), 256),
    ([5, 5, 5], (5, 5), 300),  # overlap: only the first (5, 5) merges
    ([5, 5, 5, 5], (5, 5), 300),
    ([1, 2, 3], (3, 4), 256),  # pair absent: unchanged
    ([4, 1, 2], (1, 2), 257),  # pair at the very end
    ([9], (9, 9), 256),
    ([], (1, 2), 256),
]


def check_count_pairs(count_pairs: Callable[[list[int]], dict]) -> CheckResult:
    """``count_pairs(ids)`` must map each adjacent pair ``(a, b)`` to how often it occurs."""

    def diagnose(got, expected, args, kwargs):
        ids = args[0]
        if not isinstance(got, dict):
            return f"returned {type(got).__name__}, expected a dict {{(a, b): count}}"
        got = {tuple(k) if isinstance(k, list) else k: v for k, v in got.items()}
        if got == expected:
            return None
        if set(got) - set(expected):
            extra = sorted(set(got) - set(expected))[:2]
            return (f"for {ids} you report pairs {extra} that are not adjacent in the list: "
                    "a pair is two neighbours, the id at i and the id at i + 1")
        stepping_by_two: dict = {}
        for i in range(0, len(ids) - 1, 2):
            stepping_by_two[(ids[i], ids[i + 1])] = stepping_by_two.get((ids[i], ids[i + 1]), 0) + 1
        if got == stepping_by_two:
            return (f"for {ids} you found {sum(got.values())} pairs, expected "
                    f"{sum(expected.values())}: pairs overlap ([5, 5, 5] has (5, 5) twice)")
        if got == {pair: 1 for pair in expected}:
            return (f"for {ids} every count is 1: count each occurrence of a pair, not just "
                    "whether it appears")
        return f"for {ids} got {got}, expected {expected}"

    return run_check(
        "count_pairs", count_pairs, solutions.count_pairs,
        [((list(ids),), {}) for ids in PAIR_CASES], diagnose, hint=True,
    )


def check_merge_pair(merge_pair: Callable[[list[int], tuple[int, int], int], list[int]]) -> CheckResult:
    """``merge_pair(ids, pair, new_id)`` must replace each left-to-right occurrence of pair."""

    def diagnose(got, expected, args, kwargs):
        ids, pair, new_id = args
        if not isinstance(got, list):
            return f"returned {type(got).__name__}, expected a list of ints"
        if got == expected:
            return None
        if got == ids and expected != ids:
            return f"nothing was merged in {ids}: the pair {pair} occurs in it"
        if got == expected[:-1]:
            return (f"for {ids} the last id is missing: an id with no pair after it must "
                    "still be copied")
        if got.count(new_id) == expected.count(new_id) and len(got) > len(expected):
            return (f"for {ids} you appended {new_id} but kept the merged ids too: a merge "
                    "replaces both members")
        if len(got) > len(expected):
            return (f"for {ids} with pair {pair}: got {got}, expected {expected}: after a "
                    "merge, the scan must continue after both members")
        return f"for {ids} with pair {pair}: got {got}, expected {expected}"

    return run_check(
        "merge_pair", merge_pair, solutions.merge_pair,
        [((list(ids), pair, new_id), {}) for ids, pair, new_id in MERGE_CASES], diagnose, hint=True,
    )


def judge_against(name: str, learner_fn: Callable, solution_fn: Callable, expected_fn: Callable,
                  cases, diagnose) -> CheckResult:
    """``run_check`` where the expected values come from a real model or library.

    In unattended runs (``COURSE_FILL_SOLUTIONS=1``) an unfilled stub is replaced by the
    reference *solution* here, so the solution is judged against the model: ``run_check``
    alone would fill in ``expected_fn`` and compare the model with itself.
    """
    return run_check(name, learner_fn, expected_fn, cases, diagnose, solution_fn=solution_fn)


# --- 01.3: the piece `bpe`: train_bpe -----------------------------------------------------

PRETOKENIZE = tokenization.GPT2_PRETOKENIZER  # a callable: text -> chunks (GPT-2's pattern)



def _train_texts() -> tuple[tuple[str, int], ...]:
    """(text, num_merges) cases: tiny ones with a known trap each, then a real corpus slice."""
    varied = tokenization.varied_text(4_000)
    return (
        ("aaaa aaa aa", 4),  # overlapping pairs: "aaa" holds (a, a) twice
        ("low lower lowest low low newer newest wide wider", 12),  # frequent repeated chunks
        ("ab", 5),  # one merge is all there is: stop early
        (varied[:4_000], 150),  # the Language Reference, many scripts, digits, whitespace runs
    )


def course_bpe_merges(text: str, num_merges: int, pretokenize=PRETOKENIZE) -> list[tuple[bytes, bytes]]:
    """The course trainer's merges on ``text`` as ``(left bytes, right bytes)``, in order."""
    pretokenizer = pretokenize if isinstance(pretokenize, tokenization.PreTokenizer) else PRETOKENIZE
    trained = tokenization.train_bpe(text, tokenization.NUM_BYTES + num_merges, pretokenizer=pretokenizer)
    return [(trained.vocab[left], trained.vocab[right]) for left, right in trained.merges]


def _slip_trainer(
    text: str, num_merges: int, pretokenize, *, chunks: bool = True, overlap: bool = True,
    weights: bool = True, every: bool = True, tie_smallest: bool = True,
) -> list[tuple[bytes, bytes]]:
    """The textbook trainer with one switch turned off: what a typical slip learns."""
    counted = Counter(c.encode("utf-8") for c in pretokenize(text)) if chunks else Counter([text.encode()])
    words = [list(word) for word in counted]
    freqs = [n if weights else 1 for n in counted.values()]
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    for rank in range(num_merges):
        counts: dict = {}
        for ids, freq in zip(words, freqs, strict=True):
            i = 0
            while i + 1 < len(ids):
                pair = (ids[i], ids[i + 1])
                counts[pair] = counts.get(pair, 0) + freq
                i += 1 if overlap or pair[0] != pair[1] else 2
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p if tie_smallest else tuple(-x for x in p)))
        new_id = 256 + rank
        vocab[new_id] = vocab[best[0]] + vocab[best[1]]
        merges.append((vocab[best[0]], vocab[best[1]]))
        merged_words = []
        for ids in words:
            out, i, done = [], 0, False
            while i < len(ids):
                if not done and i + 1 < len(ids) and (ids[i], ids[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                    done = not every
                else:
                    out.append(ids[i])
                    i += 1
            merged_words.append(out)
        words = merged_words
    return merges


TRAIN_SLIPS = [
    (dict(chunks=False), "merges cross chunk boundaries: pre-tokenize the text first and count "
                         "pairs only inside each chunk (a token never spans two words)"),
    (dict(overlap=False), "pairs were counted without overlap: 'aaa' holds the pair (a, a) twice"),
    (dict(weights=False), "each distinct chunk was counted once: weight its pairs by how often "
                          "the chunk occurs in the text"),
    (dict(every=False), "only the first occurrence of the chosen pair was merged in a chunk: "
                        "merge every occurrence"),
    (dict(tie_smallest=False), "a tie was broken the other way: among equally frequent pairs "
                               "the course takes the smallest (left id, right id)"),
]


def _pair_counts_before(text: str, rank: int, pretokenize) -> tuple[dict, dict]:
    """Pair counts (by bytes) in the course trainer's state just before merge ``rank``."""
    pretokenizer = pretokenize if isinstance(pretokenize, tokenization.PreTokenizer) else PRETOKENIZE
    trained = tokenization.train_bpe(text, tokenization.NUM_BYTES + rank, pretokenizer=pretokenizer)
    counts: dict = {}
    for chunk, n in Counter(pretokenizer(text)).items():
        tokenization.count_pairs(trained.encode(chunk), counts, weight=n)
    return {(trained.vocab[a], trained.vocab[b]): c for (a, b), c in counts.items()}, trained.vocab


def _diagnose_merges(got, expected, args, kwargs):
    text, num_merges, pretokenize = args
    if not isinstance(got, (list, tuple)):
        return f"returned {type(got).__name__}, expected a list of (bytes, bytes) merges"
    if got and not all(isinstance(m, tuple) and len(m) == 2 and all(isinstance(s, bytes) for s in m)
                       for m in got):
        first = next(m for m in got if not (isinstance(m, tuple) and len(m) == 2
                                            and all(isinstance(s, bytes) for s in m)))
        return (f"each merge must be a tuple (left bytes, right bytes), got {first!r}: "
                "turn token ids back into the bytes they stand for")
    got = list(got)
    if got == expected:
        return None
    if len(got) == len(expected) - 1 and got == expected[:-1]:
        return f"{len(got)} merges, expected {len(expected)}: one merge short (off by one?)"
    if len(got) == len(expected) + 1 and got[:-1] == expected:
        if len(expected) < num_merges:
            return (f"{len(got)} merges, but only {len(expected)} are possible on {text[:20]!r}: "
                    "stop when no pair is left")
        return f"{len(got)} merges, expected {len(expected)}: one merge too many (off by one?)"
    if len(got) > len(expected) and got[: len(expected)] == expected:
        return (f"{len(got)} merges, but only {len(expected)} are possible on {text[:20]!r}: "
                "stop when every chunk is a single token")
    if len(got) < len(expected) and got == expected[: len(got)]:
        return (f"stopped after {len(got)} merges, expected {len(expected)} (num_merges = "
                f"{num_merges}): pairs were still left")
    for switches, message in TRAIN_SLIPS:
        if got == _slip_trainer(text, num_merges, pretokenize, **switches):
            return message
    if len(set(got)) < len(got):
        return "the same merge was learned twice: after a merge, no occurrence of the pair is left"
    rank = next((r for r, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
    if rank is None:
        return f"{len(got)} merges, expected {len(expected)}"
    counts, _ = _pair_counts_before(text, rank, pretokenize)
    mine, theirs = counts.get(got[rank]), counts[expected[rank]]
    where = f"merge {rank} is {got[rank]!r}, expected {expected[rank]!r}"
    if mine is None:
        return f"{where}: your pair is not adjacent anywhere at that point (the merges before it agree)"
    if mine == theirs:
        return (f"{where}: both occur {mine} times, a tie: the course takes the smallest "
                "(left id, right id), with bytes as ids 0-255 and merge k as id 256 + k")
    return f"{where}: yours occurs {mine} times, the most frequent pair {theirs} times"


def check_train_bpe(train_bpe: Callable) -> CheckResult:
    """``train_bpe(text, num_merges, pretokenize)`` must learn the course trainer's merges."""
    cases = [((text, n, PRETOKENIZE), {}) for text, n in _train_texts()]
    return judge_against("train_bpe", train_bpe, solutions.train_bpe, course_bpe_merges, cases,
                         _diagnose_merges)


# --- 01.3: the piece `bpe`: encode with SmolLM2's merges ----------------------------------

ENCODE_TEXTS = [
    "Hello world!",
    "The animal didn't cross the street because it was too tired.",
    "  x =  1\n\n\tdef add(a, b):\n        return a + b\r\n",
    "In 2024 it cost $1,234.56 (about 3.14159e3 cents).",
    "Über naïve café, 東京は大きい。I 💜 NLP 🤗",
    "Pneumonoultramicroscopicsilicovolcanoconiosis aaaaaaaaaaaa ..........",
]


def real_bpe_files(tokenizer) -> tuple[list[tuple[bytes, bytes]], dict[bytes, int], Callable[[str], list[str]]]:
    """``(merges, vocab, pretokenize)`` of a Hugging Face byte-level BPE tokenizer, in the
    exercise's format: merges as byte pairs in rank order, vocab bytes -> id (special tokens
    left out), and its pre-tokenizer."""
    rebuilt = tokenization.BPETokenizer.from_tokenizer_json(json.loads(tokenizer.backend_tokenizer.to_str()))
    merges = [(rebuilt.vocab[left], rebuilt.vocab[right]) for left, right in rebuilt.merges]
    vocab = {token: i for i, token in rebuilt.vocab.items()}
    return merges, vocab, rebuilt.pretokenizer


def _slip_encode(text, merges, vocab, pretokenize, *, order: str = "rank", chunks: bool = True):
    """A typical wrong encoder: another merge order, or no pre-tokenization."""
    rank = {pair: r for r, pair in reversed(list(enumerate(merges)))}
    ids = []
    for chunk in (pretokenize(text) if chunks else [text]):
        pieces = [bytes([b]) for b in chunk.encode("utf-8")]
        while True:
            pairs = [(i, p) for i, p in enumerate(zip(pieces, pieces[1:], strict=False)) if p in rank]
            if not pairs:
                break
            if order == "leftmost":
                best = pairs[0][1]
            elif order == "latest":
                best = max(pairs, key=lambda ip: rank[ip[1]])[1]
            elif order == "frequent":
                frequency = Counter(p for _, p in pairs)
                best = min(frequency, key=lambda p: (-frequency[p], rank[p]))
            else:
                best = min(pairs, key=lambda ip: rank[ip[1]])[1]
            out, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                    out.append(pieces[i] + pieces[i + 1])
                    i += 2
                else:
                    out.append(pieces[i])
                    i += 1
            pieces = out
        ids.extend(vocab[piece] for piece in pieces)
    return ids


ENCODE_SLIPS = [
    (dict(chunks=False), "merges crossed chunk boundaries: pre-tokenize the text first and "
                         "encode each chunk on its own"),
    (dict(order="leftmost"), "you merged the leftmost mergeable pair first: merge the pair with "
                             "the lowest rank (learned earliest) first, wherever it is"),
    (dict(order="latest"), "you applied the most recently learned merge first: the lowest rank "
                           "(learned earliest) goes first"),
    (dict(order="frequent"), "you merged the most frequent pair of the chunk first: encoding "
                             "follows the merges' rank (learning order), not counts in the text"),
]


@cache
def _bundled_decoder_tokenizer():
    from transformers import AutoTokenizer

    from course_utils.models import prepare_decoder, quiet

    with quiet():
        return AutoTokenizer.from_pretrained(prepare_decoder())


def check_bpe_encode(encode: Callable, tokenizer=None) -> CheckResult:
    """``encode(text, merges, vocab, pretokenize)``, with ``tokenizer``'s real merges and
    vocabulary, must give exactly ``tokenizer``'s ids (special tokens aside). ``tokenizer``:
    a Hugging Face byte-level BPE tokenizer; ``None`` = the bundled SmolLM2's."""
    tokenizer = _bundled_decoder_tokenizer() if tokenizer is None else tokenizer
    merges, vocab, pretokenize = real_bpe_files(tokenizer)
    by_id = {i: token for token, i in vocab.items()}

    def library_ids(text, *_):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def diagnose(got, expected, args, kwargs):
        text = args[0]
        if not isinstance(got, list) or not all(isinstance(i, int) for i in got):
            return f"returned {type(got).__name__}, expected a list of int token ids"
        if got == expected:
            return None
        for switches, message in ENCODE_SLIPS:
            if got == _slip_encode(*args, **switches):
                return f"{message} (text {text[:30]!r})"
        if len(got) == len(expected) and all(i not in by_id for i in got):
            return ("right number of tokens but ids that are not in vocab: look each final "
                    "byte string up in vocab")
        first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                     min(len(got), len(expected)))
        shown = [by_id.get(i, i) for i in got[first:first + 3]]
        return (f"on {text[:30]!r}: {len(got)} ids, expected {len(expected)}; first difference at "
                f"token {first}: yours {shown}, SmolLM2's {[by_id[i] for i in expected[first:first + 3]]}")

    cases = [((text, merges, vocab, pretokenize), {}) for text in ENCODE_TEXTS]
    cases.append(((tokenization.varied_text(3_000)[:3_000], merges, vocab, pretokenize), {}))
    return judge_against("encode (SmolLM2's merges)", encode, solutions.encode, library_ids, cases, diagnose)
