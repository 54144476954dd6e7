"""ARENA-style exercise checkers.

Each notebook has a module here (``nb03``, ``nb04`` …) whose ``check_*`` functions run the
learner's function against the reference (in ``course_utils.solutions``) on several cases
and, when it is wrong, say *what* is wrong in words. Checkers never raise on a wrong
answer: they print a verdict and return a ``CheckResult`` so "Run All" keeps going.

A stub that still raises ``NotImplementedError`` is reported as "not attempted". When the
environment variable ``COURSE_FILL_SOLUTIONS=1`` is set (``task run`` / ``task test`` / CI
set it), the reference solution is checked in its place, so executed notebooks show a
passing check.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

FILL_ENV = "COURSE_FILL_SOLUTIONS"
# A checker diagnoses; it never prints a solution. ``hint`` (the exercise's own hint
# text, kept beside its checker until the notebooks carry it in collapsed <details>
# blocks) only decides whether the verdict points the learner to the hints.
POINTER = "Stuck? Re-read the exercise above; a reference solution is in course_utils/solutions/."


@dataclass
class CheckResult:
    """Outcome of one exercise check."""

    name: str
    passed: bool
    cases: int
    message: str
    used_reference: bool = False
    failures: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:
        """The verdict was already printed; showing the object again would repeat it."""


def filling_solutions() -> bool:
    """True when notebooks run unattended and stubs are replaced by the references."""
    return os.environ.get(FILL_ENV, "0") == "1"


def run_check(
    name: str,
    learner_fn: Callable[..., Any],
    reference_fn: Callable[..., Any],
    cases: Iterable[tuple[tuple, dict]],
    diagnose: Callable[[Any, Any, tuple, dict], str | None],
    hint: str = "",
    verbose: bool = True,
) -> CheckResult:
    """Run ``learner_fn`` and ``reference_fn`` on each ``(args, kwargs)`` case.

    ``diagnose(got, expected, args, kwargs)`` returns ``None`` when ``got`` is right, or a
    sentence saying what is wrong (e.g. "rows don't sum to 1: softmax over the last axis?").
    """
    cases = list(cases)
    used_reference = False
    try:
        _probe(learner_fn, cases[0])
    except NotImplementedError:
        if not filling_solutions():
            result = CheckResult(
                name, False, len(cases),
                f"○ {name}: not attempted yet: fill in the function above, then re-run."
                + (f"\n  {POINTER}" if hint else ""),
            )
            return _report(result, verbose)
        learner_fn, used_reference = reference_fn, True
    except Exception:  # a crash on case 0 is reported in the loop below, with its case
        pass

    failures: list[str] = []
    for index, (args, kwargs) in enumerate(cases):
        expected = reference_fn(*args, **kwargs)
        try:
            got = learner_fn(*args, **kwargs)
        except Exception as error:  # the learner's code: report, don't crash the notebook
            failures.append(f"case {index}: raised {type(error).__name__}: {error}")
            continue
        problem = diagnose(got, expected, args, kwargs)
        if problem:
            failures.append(f"case {index}: {problem}")
    passed = not failures
    if passed:
        source = " (reference solution filled in: COURSE_FILL_SOLUTIONS=1)" if used_reference else ""
        message = f"✔ {name}: all {len(cases)} cases pass{source}."
    else:
        message = f"✘ {name}: {len(failures)} of {len(cases)} cases fail.\n  " + "\n  ".join(
            failures[:3]
        )
        if hint:
            message += f"\n  {POINTER}"
    return _report(CheckResult(name, passed, len(cases), message, used_reference, failures), verbose)


def _probe(fn: Callable[..., Any], case: tuple[tuple, dict]) -> None:
    args, kwargs = case
    fn(*args, **kwargs)


def _report(result: CheckResult, verbose: bool) -> CheckResult:
    if verbose:
        print(result.message)
    return result
