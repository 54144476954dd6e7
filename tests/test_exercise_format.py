"""Every exercise follows the course's format (ARENA-style): header, stub, hints, checker.

Header: ``### Exercise NN.k — title`` with difficulty, importance, time and what the learner
will have built; then the stub (raises ``NotImplementedError``); then progressive hints in at
least two collapsed ``<details>`` blocks with a link to the reference solutions; then the
checker cell.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from conftest import NOTEBOOK_PATHS

HEADER = re.compile(r"^### Exercise (\d\d[a-z]?)\.(\d+) — \S")
FIELDS = {
    "difficulty": re.compile(r"\*\*Difficulty:\*\* [1-5]/5"),
    "importance": re.compile(r"\*\*Importance:\*\* [1-5]/5"),
    "time": re.compile(r"\*\*Time:\*\* ~\d+ min"),
    "you will have built": re.compile(r"\*\*You will have built:\*\* \S"),
}
CHECK_CALL = re.compile(r"^\s*(?:\w+\s*=\s*)?(?:\w+\.)*(check_\w+)\(", re.MULTILINE)


def checker_names(sources: list[str]) -> set[str]:
    """The ``check_*`` names a notebook imports from ``course_utils.exercises``."""
    return {name for source in sources if "course_utils.exercises" in source
            for name in re.findall(r"\bcheck_\w+", source)}


def is_checker_cell(source: str, names: set[str]) -> bool:
    """A cell that calls an exercise checker (imported from course_utils.exercises)."""
    return any(match.group(1) in names for match in CHECK_CALL.finditer(source))


def exercises(path):
    notebook = nbformat.read(path, as_version=4)
    cells = notebook.cells
    for index, cell in enumerate(cells):
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("### Exercise"):
            following = []
            for later in cells[index + 1:]:
                if later.cell_type == "markdown" and later.source.lstrip().startswith("### Exercise"):
                    break
                following.append(later)
            yield cell, following


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_exercises_follow_the_format(path):
    number = path.name.split("_")[0]
    found = list(exercises(path))
    names = checker_names([c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"])
    for header, following in found:
        first_line = header.source.strip().splitlines()[0]
        match = HEADER.match(first_line)
        assert match, f"{path.name}: header {first_line!r} is not '### Exercise {number}.k — title'"
        assert match.group(1) == number, f"{path.name}: {first_line!r} numbered for another notebook"
        for field, pattern in FIELDS.items():
            assert pattern.search(header.source), f"{path.name}: {first_line!r} lacks its {field}"
        kinds = [cell.cell_type for cell in following]
        assert kinds and kinds[0] == "code" and "NotImplementedError" in following[0].source, (
            f"{path.name}: {first_line!r} is not followed by a stub that raises NotImplementedError"
        )
        hints = next((cell for cell in following[1:] if cell.cell_type == "markdown"
                      and "<details>" in cell.source), None)
        assert hints is not None, f"{path.name}: {first_line!r} has no <details> hints"
        assert hints.source.count("<details>") >= 2, f"{path.name}: {first_line!r} needs ≥ 2 progressive hints"
        assert "course_utils/solutions/" in hints.source, f"{path.name}: {first_line!r} hints lack the solutions link"
        after_hints = following[following.index(hints) + 1:]
        assert any(cell.cell_type == "code" and is_checker_cell(cell.source, names) for cell in after_hints), (
            f"{path.name}: {first_line!r} has no checker cell after its hints"
        )
    numbers = [int(HEADER.match(h.source.strip().splitlines()[0]).group(2)) for h, _ in found]
    assert numbers == list(range(1, len(numbers) + 1)), f"{path.name}: exercises numbered {numbers}"


@pytest.mark.parametrize("path", [p for p in NOTEBOOK_PATHS if not p.name.startswith("00_")],
                         ids=lambda p: p.stem)
def test_every_notebook_has_an_exercise(path):
    assert list(exercises(path)), f"{path.name} has no exercise"
