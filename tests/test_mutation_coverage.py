"""Every exercise checker has at least three typical wrong answers that it must catch.

The mutants live in ``tests/test_mutations_nbNN.py`` (see ``tests/mutation.py``); this test only
checks the coverage: each public ``check_*`` function of ``course_utils.exercises.nbNN`` has ≥ 3
mutants with distinct expected diagnoses, and a reference that must pass.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest

from course_utils import exercises

TESTS = Path(__file__).resolve().parent
EXERCISE_DIR = Path(exercises.__file__).resolve().parent
MODULES = sorted(p.stem for p in EXERCISE_DIR.glob("nb*.py"))


def _checkers(module_name: str) -> list[str]:
    module = importlib.import_module(f"course_utils.exercises.{module_name}")
    return sorted(
        name for name, fn in vars(module).items()
        if name.startswith("check_") and inspect.isfunction(fn) and fn.__module__ == module.__name__
    )


def _mutation_module(module_name: str):
    path = TESTS / f"test_mutations_{module_name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"_coverage_{module_name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("module_name", MODULES)
def test_every_checker_has_three_mutants_and_a_reference(module_name):
    checkers = _checkers(module_name)
    if not checkers:
        pytest.skip(f"{module_name} has no checkers")
    mutations = _mutation_module(module_name)
    assert mutations is not None, f"tests/test_mutations_{module_name}.py is missing"
    assert getattr(mutations, "MODULE", None) == module_name
    by_checker: dict[str, set[str]] = {}
    for mutant in mutations.MUTANTS:
        by_checker.setdefault(mutant.checker, set()).add(mutant.expect.lower())
    thin = {name: len(by_checker.get(name, ())) for name in checkers if len(by_checker.get(name, ())) < 3}
    assert not thin, f"{module_name}: checkers with fewer than 3 distinct diagnosed mutants: {thin}"
    missing_reference = sorted(set(checkers) - set(mutations.REFERENCES))
    assert not missing_reference, f"{module_name}: no reference run for {missing_reference}"


@pytest.mark.parametrize("module_name", MODULES)
def test_checkers_carry_no_hint_text(module_name):
    """Hints live in the notebooks' <details> blocks; a checker only points to them."""
    tree = ast.parse((EXERCISE_DIR / f"{module_name}.py").read_text())
    offending = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "hint" and isinstance(keyword.value, ast.Constant) \
                        and isinstance(keyword.value.value, str):
                    offending.append(node.lineno)
    assert not offending, f"{module_name}.py passes hint text at lines {offending}: pass hint=True"
