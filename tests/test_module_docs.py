"""One home per concept, findable: every course_utils module's docstring starts with
"Used in notebooks NN, MM" (or "Used by ..." for set-up code), and names every notebook
that imports it (issue 14)."""

from __future__ import annotations

import ast
import re

import nbformat
import pytest

from conftest import NOTEBOOK_PATHS, REPO

MODULES = sorted(p for p in (REPO / "course_utils").glob("*.py") if p.name != "__init__.py")
RANGE = re.compile(r"(\d\d[a-z]?)\s*[–-]\s*(\d\d[a-z]?)")
NUMBER = re.compile(r"\b(\d\d[a-z]?)\b")


def _first_line(path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.splitlines()[0] if doc else ""


def _listed(line: str, all_numbers: list[str]) -> set[str]:
    """Notebook numbers a first line names: ``04, 05``, ``03–08`` (a range, 08b inside)."""
    head = line.split(":")[0]
    listed = set(NUMBER.findall(head))
    for start, end in RANGE.findall(head):
        listed |= {n for n in all_numbers if start <= n <= end or n[:2] == end[:2] <= end}
    return listed


def _importers(module: str) -> list[str]:
    pattern = re.compile(rf"course_utils\.{module}\b|from course_utils import [^\n]*\b{module}\b")
    found = []
    for path in NOTEBOOK_PATHS:
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        if pattern.search(code):
            found.append(path.name.split("_")[0])
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_docstring_names_the_notebooks_that_use_it(path):
    line = _first_line(path)
    assert re.match(r"Used (in notebooks? |by )", line), (
        f"course_utils/{path.name}: the docstring must start with 'Used in notebooks NN, MM' "
        f"(or 'Used by ...'), got {line!r}")
    numbers = [p.name.split("_")[0] for p in NOTEBOOK_PATHS]
    missing = [n for n in _importers(path.stem) if n not in _listed(line, numbers)]
    assert not missing, (
        f"course_utils/{path.name} is imported by notebook(s) {missing}, which its first "
        f"docstring line does not list: {line!r}")


def test_package_docstring_lists_every_module():
    doc = ast.get_docstring(ast.parse((REPO / "course_utils" / "__init__.py").read_text()))
    listed = set(re.findall(r"^- ``(\w+)``", doc, re.M)) | set(re.findall(r"``(\w+)``", doc))
    missing = [p.stem for p in MODULES if p.stem not in listed]
    assert not missing, f"course_utils/__init__.py does not list {missing}"


def test_range_parsing():
    numbers = ["00", "01", "07", "08", "08b", "09", "13"]
    assert _listed("Used in notebooks 00–08, 13: x", numbers) == {"00", "01", "07", "08", "08b", "13"}
    assert _listed("Used in notebook 08b: x", numbers) == {"08b"}
