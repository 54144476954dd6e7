"""ARENA-style exercise checkers.

Each notebook has a module here (``nb03``, ``nb04`` …) whose ``check_*`` functions run the
learner's function against the reference (in ``course_utils.solutions``) on several cases
and, when it is wrong, say *what* is wrong in words. Checkers never raise on a wrong
answer: they print a verdict and return a ``CheckResult`` so "Run All" keeps going.

A stub that still raises ``NotImplementedError`` is reported as "not attempted". When the
environment variable ``COURSE_FILL_SOLUTIONS=1`` is set (``task run`` / ``task test`` / CI
set it), the reference solution is checked in its place, so executed notebooks show a
passing check.

A learner's function that runs longer than ``timeout_s`` seconds on one case (an infinite
loop, a Python loop over a million tokens) is stopped with a message; the kernel survives.
The hints live in the notebooks, in collapsed ``<details>`` blocks under each exercise; a
checker only points to them.

Used in every notebook with an exercise (00–13).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

FILL_ENV = "COURSE_FILL_SOLUTIONS"
DEFAULT_TIMEOUT_S = 10.0
# A checker diagnoses; it never prints a solution. ``hint`` only decides whether the
# verdict points the learner to the collapsed hints under the exercise.
POINTER = ("Stuck? Open the hints under the exercise (Hint 1, then Hint 2); a reference "
           "solution is in course_utils/solutions/.")


class CheckTimeout(TimeoutError):
    """The learner's function ran longer than the checker's time limit."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CheckTimeout` inside the block after ``seconds`` (wall clock).

    Uses ``SIGALRM``, so it works in the kernel's main thread on Linux and macOS; elsewhere
    (Windows, a worker thread) it is a no-op rather than an error. A running C call (one big
    matmul) finishes before the alarm is seen; a Python loop is stopped within milliseconds.
    """
    usable = (
        seconds is not None and seconds > 0 and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _alarm(signum, frame):
        raise CheckTimeout(f"stopped after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
    hint: bool | str = True,
    verbose: bool = True,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    solution_fn: Callable[..., Any] | None = None,
) -> CheckResult:
    """Run ``learner_fn`` and ``reference_fn`` on each ``(args, kwargs)`` case.

    ``diagnose(got, expected, args, kwargs)`` returns ``None`` when ``got`` is right, or a
    sentence saying what is wrong (e.g. "rows don't sum to 1: softmax over the last axis?").
    ``reference_fn`` may compute the expected value from a real model rather than a
    solution. ``hint`` (truthy) adds the pointer to the notebook's hints; hint *text* does
    not belong here. Each call of ``learner_fn`` is stopped after ``timeout_s`` seconds
    (``None``: no limit). ``solution_fn`` is the reference *solution* to check in place of
    an unfilled stub in unattended runs, when ``reference_fn`` computes the expected value
    from the real model (so the filled-in check is not the model compared with itself).
    """
    cases = list(cases)
    used_reference = False
    try:
        with time_limit(timeout_s):
            _probe(learner_fn, cases[0])
    except CheckTimeout:
        result = CheckResult(
            name, False, len(cases),
            f"✘ {name}: stopped after {timeout_s:g} s on case 0 (the checker's time limit): "
            "an infinite loop, or a Python loop where a tensor operation would do?"
            + (f"\n  {POINTER}" if hint else ""),
            failures=[f"case 0: stopped after {timeout_s:g} s (time limit)"],
        )
        return _report(result, verbose)
    except NotImplementedError:
        if not filling_solutions():
            result = CheckResult(
                name, False, len(cases),
                f"○ {name}: not attempted yet: fill in the function above, then re-run."
                + (f"\n  {POINTER}" if hint else ""),
            )
            return _report(result, verbose)
        learner_fn, used_reference = solution_fn or reference_fn, True
    except Exception:  # a crash on case 0 is reported in the loop below, with its case
        pass

    failures: list[str] = []
    for index, (args, kwargs) in enumerate(cases):
        expected = reference_fn(*args, **kwargs)
        try:
            with time_limit(None if used_reference else timeout_s):
                got = learner_fn(*args, **kwargs)
        except CheckTimeout:
            failures.append(f"case {index}: stopped after {timeout_s:g} s (the checker's time limit): "
                            "an infinite loop?")
            continue
        except NotImplementedError:
            failures.append(f"case {index}: still raises NotImplementedError: part of it is not written yet")
            continue
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
