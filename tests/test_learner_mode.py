"""Learner mode: every notebook runs top to bottom with the exercise stubs unfilled.

``COURSE_FILL_SOLUTIONS=0`` is what a learner gets in ``task lab``: no reference is filled in
for a stub. Each notebook must still complete, every checker must report "not attempted",
and no line of the reference solutions may appear in any output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import NOTEBOOK_PATHS, REPO

pytestmark = pytest.mark.slow

CHECK_CALL = re.compile(r"^\s*(?:\w+\s*=\s*)?(?:\w+\.)*(check_\w+)\(", re.MULTILINE)


def checker_names(sources: list[str]) -> set[str]:
    """The ``check_*`` names a notebook imports from ``course_utils.exercises``."""
    return {name for source in sources if "course_utils.exercises" in source
            for name in re.findall(r"\bcheck_\w+", source)}


def is_checker_cell(source: str, names: set[str]) -> bool:
    """A cell that calls an exercise checker (imported from course_utils.exercises)."""
    return any(match.group(1) in names for match in CHECK_CALL.finditer(source))
PASS_VERDICT = re.compile(r"^✔ .*: all \d+ cases pass", re.MULTILINE)


def learner_env(workspace: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", COURSE_NUM_THREADS="2",
               PYTHONHASHSEED="0", COURSE_FILL_SOLUTIONS="0", COURSE_NETGUARD="1",
               COURSE_LEARNER_DIR=str(workspace),
               PYTHONPATH=str(REPO / "tools/netguard"), PYDEVD_DISABLE_FILE_VALIDATION="1")
    return env


def output_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
        elif output.get("output_type") == "error":
            parts.append("\n".join(output.get("traceback", [])))
    return "".join(parts)


def solution_lines(notebook: Path) -> set[str]:
    """Distinctive code lines of the notebook's reference solutions module."""
    number = notebook.name.split("_")[0]
    path = REPO / "course_utils" / "solutions" / f"nb{number}.py"
    if not path.exists():
        return set()
    lines = set()
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if len(line) < 30 or line.startswith(("#", "def ", "class ", "import ", "from ", '"""', "return None")):
            continue
        if '"""' in line or line.endswith(":") and line.startswith(("if ", "for ", "with ", "while ")):
            continue
        lines.add(line)
    return lines


@pytest.mark.parametrize("notebook", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_notebook_runs_in_learner_mode(notebook, tmp_path):
    output = tmp_path / notebook.name
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/run_notebooks.py"), str(notebook), "-o", str(output)],
        capture_output=True, text=True, env=learner_env(tmp_path / "my_transformer"), cwd=REPO,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    executed = nbformat.read(output, as_version=4)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    names = checker_names([cell.source for cell in code])
    checker_cells = [cell for cell in code if is_checker_cell(cell.source, names)]
    for cell in checker_cells:
        text = output_text(cell)
        assert "not attempted" in text, f"a checker did not report 'not attempted':\n{cell.source}\n---\n{text}"
        assert not PASS_VERDICT.search(text), f"a checker passed an unfilled stub:\n{cell.source}"
        assert "reference solution filled in" not in text
    headers = [cell for cell in executed.cells
               if cell.cell_type == "markdown" and cell.source.lstrip().startswith("### Exercise")]
    assert len(checker_cells) >= len(headers), (
        f"{len(headers)} exercises but {len(checker_cells)} checker cells"
    )
    everything = "\n".join(output_text(cell) for cell in code)
    leaked = sorted(line for line in solution_lines(notebook) if line in everything)
    assert not leaked, f"solution text in the outputs: {leaked[:5]}"
