"""Checkers for notebook 01 (tokenization): the two steps of the BPE merge loop."""

from __future__ import annotations

from collections.abc import Callable

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
                    "pairs are (ids[i], ids[i+1])")
        stepping_by_two: dict = {}
        for i in range(0, len(ids) - 1, 2):
            stepping_by_two[(ids[i], ids[i + 1])] = stepping_by_two.get((ids[i], ids[i + 1]), 0) + 1
        if got == stepping_by_two:
            return (f"for {ids} you found {sum(got.values())} pairs, expected "
                    f"{sum(expected.values())}: pairs overlap ([5, 5, 5] has (5, 5) twice); "
                    "step one position at a time, not two")
        if got == {pair: 1 for pair in expected}:
            return (f"for {ids} every count is 1: count each occurrence of a pair, not just "
                    "whether it appears")
        return f"for {ids} got {got}, expected {expected}"

    return run_check(
        "count_pairs", count_pairs, solutions.count_pairs,
        [((list(ids),), {}) for ids in PAIR_CASES], diagnose,
        hint="loop over zip(ids, ids[1:]) (or itertools.pairwise(ids)) and add 1 to counts[pair]",
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
            return f"nothing was merged in {ids}: compare (ids[i], ids[i+1]) with the pair"
        if got == expected[:-1]:
            return (f"for {ids} the last id is missing: when no pair starts at the last "
                    "position, still append ids[-1]")
        if got.count(new_id) == expected.count(new_id) and len(got) > len(expected):
            return (f"for {ids} you appended {new_id} but kept the merged ids too: a merge "
                    "replaces both members")
        if len(got) > len(expected):
            return (f"for {ids} with pair {pair}: got {got}, expected {expected}: after a "
                    "merge, skip both members (i += 2) before looking for the next pair")
        return f"for {ids} with pair {pair}: got {got}, expected {expected}"

    return run_check(
        "merge_pair", merge_pair, solutions.merge_pair,
        [((list(ids), pair, new_id), {}) for ids, pair, new_id in MERGE_CASES], diagnose,
        hint="walk i over ids; on a match append new_id and step 2, else append ids[i] and step 1",
    )
