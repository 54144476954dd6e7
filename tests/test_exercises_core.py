"""The exercise framework: not-attempted, wrong (with a diagnosis), right, reference fill."""

from __future__ import annotations

import pytest

from course_utils.exercises import run_check

CASES = [((x,), {}) for x in (1, 2, 5)]


def reference(x):
    return x * x


def diagnose(got, expected, args, kwargs):
    if got == expected:
        return None
    if got == 2 * args[0]:
        return "you doubled instead of squaring"
    return f"got {got}, expected {expected}"


def stub(x):
    raise NotImplementedError


def test_not_attempted(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")
    result = run_check("square", stub, reference, CASES, diagnose, hint="x * x")
    assert not result.passed and "not attempted" in result.message
    out = capsys.readouterr().out
    assert "x * x" not in out and "course_utils/solutions/" in out  # a pointer, no answer


def test_reference_filled_in_when_asked(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "1")
    result = run_check("square", stub, reference, CASES, diagnose, verbose=False)
    assert result.passed and result.used_reference


def test_wrong_answer_is_diagnosed_in_words(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "1")
    result = run_check("square", lambda x: 2 * x, reference, CASES, diagnose, verbose=False)
    assert not result.passed and not result.used_reference
    assert "you doubled instead of squaring" in result.message
    assert len(result.failures) == 2  # 2*2 == 2**2, so case 1 passes by accident


def test_a_crash_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")
    result = run_check("square", lambda x: 1 / 0, reference, CASES, diagnose, verbose=False)
    assert not result.passed and "ZeroDivisionError" in result.message


@pytest.mark.slow  # loads MiniLM (the encoder fixture)
def test_nb00_checker_passes_reference_and_fails_typical_mistakes(encoder):
    from course_utils.exercises.nb00 import check_count_tokens
    from course_utils.solutions.nb00 import count_tokens

    _, tokenizer = encoder
    assert check_count_tokens(count_tokens, tokenizer).passed
    with_specials = check_count_tokens(lambda t, tok: len(tok(t)["input_ids"]), tokenizer)
    assert not with_specials.passed and "[CLS]" in with_specials.message
    characters = check_count_tokens(lambda t, tok: len(t), tokenizer)
    assert not characters.passed and "characters" in characters.message
