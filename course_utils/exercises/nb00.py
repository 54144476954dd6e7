"""Checker for notebook 00's warm-up exercise."""

from __future__ import annotations

from collections.abc import Callable

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb00 as solutions

WARMUP_TEXTS = ["Hello, world!", "Transformers are amazing!", "unbelievably", "a"]


def check_count_tokens(count_tokens: Callable[[str, object], int], tokenizer) -> CheckResult:
    """``count_tokens(text, tokenizer)`` must equal the number of subword tokens of text,
    not counting the special tokens [CLS] and [SEP]."""

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, int):
            return f"returned {type(got).__name__}, expected an int"
        if got == expected:
            return None
        if got == expected + 2:
            return (f"got {got} for {args[0]!r}, expected {expected}: you counted [CLS] and "
                    "[SEP]; use add_special_tokens=False")
        if got == len(args[0]):
            return f"got {got} for {args[0]!r}: that's the number of characters, not tokens"
        return f"got {got} for {args[0]!r}, expected {expected}"

    return run_check(
        "count_tokens", count_tokens, solutions.count_tokens,
        [((text, tokenizer), {}) for text in WARMUP_TEXTS], diagnose,
        hint="len(tokenizer(text, add_special_tokens=False)['input_ids'])",
    )
