"""Reference solutions for notebook 01 (tokenization): the two steps of the BPE merge loop."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise


def count_pairs(ids: Sequence[int]) -> dict[tuple[int, int], int]:
    """How often each adjacent pair occurs: ``[1, 2, 1, 2] -> {(1, 2): 2, (2, 1): 1}``."""
    counts: dict[tuple[int, int], int] = {}
    for pair in pairwise(ids):  # overlapping: (ids[0], ids[1]), (ids[1], ids[2]), ...
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of ``pair``, scanning left to right, by ``new_id``.

    After a merge the scan jumps past both members, so ``[5, 5, 5]`` with pair ``(5, 5)``
    becomes ``[new_id, 5]``.
    """
    merged: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged
