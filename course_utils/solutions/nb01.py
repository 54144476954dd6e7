"""Reference solutions for notebook 01 (tokenization).

Warm-ups (01.1, 01.2): ``count_pairs`` and ``merge_pair`` are the very functions the course's
BPE trainer uses, in ``course_utils/tokenization.py``: ``count_pairs`` counts overlapping
adjacent pairs; ``merge_pair`` replaces each occurrence left to right and skips past both
members, so ``[5, 5, 5]`` with the pair ``(5, 5)`` becomes ``[new_id, 5]``.

The piece (01.3, ``%%exercise bpe``): ``train_bpe`` and ``encode`` with the contract's exact
signatures. They are teaching versions (the textbook loop that recounts every pair after each
merge; ``course_utils.tokenization.train_bpe`` is the fast incremental one) and use nothing but
the standard library, so the capstone can run them as the learner's own piece.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from course_utils.tokenization import count_pairs, merge_pair

__all__ = ["count_pairs", "encode", "merge_pair", "train_bpe"]


def train_bpe(
    text: str, num_merges: int, pretokenize: Callable[[str], list[str]]
) -> list[tuple[bytes, bytes]]:
    """Learn up to ``num_merges`` byte-level BPE merges on ``text``, in the order learned.

    Ids: byte ``b`` is id ``b``; the k-th merge makes id ``256 + k``. Each step counts the
    adjacent pairs inside every chunk (weighted by how often the chunk occurs; pairs overlap),
    merges the most frequent pair everywhere (ties: the smallest ``(left id, right id)``),
    and stops early when no pair is left. Returns each merge as ``(left bytes, right bytes)``.
    """
    chunk_counts = Counter(chunk.encode("utf-8") for chunk in pretokenize(text))
    words = [list(chunk) for chunk in chunk_counts]  # each distinct chunk as byte ids
    frequencies = list(chunk_counts.values())
    token_bytes = {i: bytes([i]) for i in range(256)}  # id -> the bytes it stands for
    merges: list[tuple[bytes, bytes]] = []
    for rank in range(num_merges):
        counts: dict[tuple[int, int], int] = {}
        for ids, frequency in zip(words, frequencies, strict=True):
            for pair in zip(ids, ids[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + frequency
        if not counts:
            break  # every chunk is a single token: nothing left to merge
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent; ties: smallest
        new_id = 256 + rank
        token_bytes[new_id] = token_bytes[best[0]] + token_bytes[best[1]]
        merges.append((token_bytes[best[0]], token_bytes[best[1]]))
        words = [merge_pair(ids, best, new_id) for ids in words]
    return merges


def encode(
    text: str,
    merges: list[tuple[bytes, bytes]],
    vocab: dict[bytes, int],
    pretokenize: Callable[[str], list[str]],
) -> list[int]:
    """Token ids of ``text``: pre-tokenize, then per chunk start from its UTF-8 bytes and
    repeatedly merge the adjacent pair of lowest rank (earliest learned) until none is left;
    finally look every piece up in ``vocab`` (bytes -> id)."""
    rank = {pair: r for r, pair in reversed(list(enumerate(merges)))}  # first rank wins
    ids: list[int] = []
    for chunk in pretokenize(text):
        pieces = [bytes([b]) for b in chunk.encode("utf-8")]
        while len(pieces) >= 2:
            pairs = [(rank[p], i) for i, p in enumerate(zip(pieces, pieces[1:], strict=False)) if p in rank]
            if not pairs:
                break
            best = pieces[min(pairs)[1]], pieces[min(pairs)[1] + 1]
            merged, i = [], 0
            while i < len(pieces):  # merge every occurrence, left to right
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                    merged.append(pieces[i] + pieces[i + 1])
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            pieces = merged
        ids.extend(vocab[piece] for piece in pieces)
    return ids
