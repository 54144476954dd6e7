"""Checker for notebook 00's warm-up exercise (00.1, ``count_tokens``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb00 as solutions

WARMUP_TEXTS = ["Hello, world!", "Transformers are amazing!", "unbelievably", "a"]


@cache
def _bundled_encoder_tokenizer():
    from transformers import AutoTokenizer

    from course_utils.models import encoder_dir, quiet

    with quiet():
        return AutoTokenizer.from_pretrained(encoder_dir())


def check_count_tokens(count_tokens: Callable[[str, object], int], tokenizer=None) -> CheckResult:
    """``count_tokens(text, tokenizer)`` must equal the number of subword tokens of text,
    not counting the special tokens [CLS] and [SEP]. ``tokenizer``: default MiniLM's."""
    tokenizer = _bundled_encoder_tokenizer() if tokenizer is None else tokenizer
    specials = len(tokenizer("a")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"])

    def diagnose(got, expected, args, kwargs):
        if isinstance(got, bool) or not isinstance(got, int):
            return f"returned {type(got).__name__}, expected an int"
        if got == expected:
            return None
        if specials and got == expected + specials:
            return (f"got {got} for {args[0]!r}, expected {expected}: you counted the special "
                    "tokens ([CLS] and [SEP]) too")
        if got == len(args[0]):
            return f"got {got} for {args[0]!r}: that's the number of characters, not tokens"
        if got == len(args[0].split()):
            return f"got {got} for {args[0]!r}: that's the number of words; a word can be several tokens"
        return f"got {got} for {args[0]!r}, expected {expected}"

    return run_check(
        "count_tokens", count_tokens, solutions.count_tokens,
        [((text, tokenizer), {}) for text in WARMUP_TEXTS], diagnose, hint=True,
    )
