"""Mutation tests for the exercise checkers: typical wrong answers must fail, specifically.

Each ``tests/test_mutations_nbNN.py`` lists, for every checker of notebook NN, at least three
typical wrong implementations (the classic slips) and the words its diagnosis must contain,
plus the reference that must pass. ``tests/test_mutation_coverage.py`` asserts every
``check_*`` function in ``course_utils.exercises.nb*`` is covered that way.

A mutation module looks like this::

    import pytest
    from mutation import Mutant, run_mutant, run_reference
    from course_utils.solutions import nb04 as solutions

    MODULE = "nb04"
    MUTANTS = [
        Mutant("check_softmax", "no max subtraction", lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
               expect="overflow"),
        ...
    ]
    REFERENCES = {"check_softmax": solutions.softmax, ...}

    @pytest.mark.parametrize("mutant", MUTANTS, ids=str)
    def test_mutant(mutant):
        run_mutant(MODULE, mutant)

    @pytest.mark.parametrize("checker", sorted(REFERENCES))
    def test_reference_passes(checker):
        run_reference(MODULE, checker, REFERENCES[checker])

Mark the module ``pytestmark = pytest.mark.slow`` when its checkers load a real model.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from course_utils.exercises import FILL_ENV, CheckResult


@dataclass(frozen=True)
class Mutant:
    """A typical wrong implementation of one exercise."""

    checker: str  # the check_* function's name in course_utils.exercises.<MODULE>
    name: str  # the slip, in words ("no √d", "softmax over the wrong axis")
    fn: Callable[..., Any] | type  # what the learner would pass to the checker
    expect: str  # a phrase the diagnosis must contain (case-insensitive)

    def __str__(self) -> str:
        return f"{self.checker}:{self.name}"


@contextmanager
def learner_mode():
    """Checkers judge what they are given: no reference is filled in for a stub."""
    previous = os.environ.get(FILL_ENV)
    os.environ[FILL_ENV] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FILL_ENV, None)
        else:
            os.environ[FILL_ENV] = previous


def checker(module: str, name: str) -> Callable[..., CheckResult]:
    return getattr(importlib.import_module(f"course_utils.exercises.{module}"), name)


def run_mutant(module: str, mutant: Mutant) -> CheckResult:
    """Assert the checker fails on ``mutant`` with a diagnosis containing ``mutant.expect``."""
    with learner_mode():
        result = checker(module, mutant.checker)(mutant.fn)
    assert isinstance(result, CheckResult), f"{mutant.checker} returned {type(result).__name__}"
    assert not result.passed, f"{mutant}: the checker passed a wrong implementation"
    text = (result.message + "\n" + "\n".join(result.failures)).lower()
    assert mutant.expect.lower() in text, (
        f"{mutant}: diagnosis does not say {mutant.expect!r}:\n{result.message}"
    )
    assert "not attempted" not in text, f"{mutant}: a wrong answer was reported as not attempted"
    return result


def run_reference(module: str, name: str, reference: Callable[..., Any] | type) -> CheckResult:
    """Assert the checker passes the reference solution, judged as a learner's answer."""
    with learner_mode():
        result = checker(module, name)(reference)
    assert result.passed and not result.used_reference, result.message
    return result
