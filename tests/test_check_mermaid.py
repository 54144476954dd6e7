"""tools/check_mermaid.py: finds every Mermaid block of a notebook and reports, per
diagram, OK or Mermaid's own parse error (the pinned Mermaid, in headless Chromium)."""

from __future__ import annotations

import sys

import nbformat
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import assets  # noqa: E402
import check_mermaid  # noqa: E402

GOOD = 'flowchart LR\n  x["tokens (B, T)"] --> e["embedding (B, T, C)<br/>one row per id"]\n'
BAD = 'flowchart LR\n  x["tokens (B, T) --> e[oops\n'


def _notebook(tmp_path, *markdown: str, code: str = "") -> object:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(m) for m in markdown]
    if code:
        nb.cells.append(nbformat.v4.new_code_cell(code))
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_finds_fenced_blocks_in_markdown_only(tmp_path):
    path = _notebook(
        tmp_path,
        f"What to see:\n\n```mermaid\n{GOOD}```\n\ntext\n\n~~~ mermaid\n{BAD}~~~\n",
        "```python\nnot = 'a diagram'\n```\n",
        f"  ```mermaid\n{GOOD}  ```",
        code=f"s = '''```mermaid\n{GOOD}```'''",
    )
    found = check_mermaid.diagrams_in(path)
    assert [(d.cell, d.index) for d in found] == [(0, 1), (0, 2), (2, 3)]
    assert found[0].code == GOOD and found[1].code == BAD


@pytest.mark.slow
@pytest.mark.browser
def test_reports_ok_and_parse_errors(tmp_path, capsys):
    if not assets.is_cached(assets.MERMAID):
        pytest.skip("Mermaid not fetched yet: run `task setup`")
    path = _notebook(tmp_path, f"A.\n\n```mermaid\n{GOOD}```", f"B.\n\n```mermaid\n{BAD}```")
    code = check_mermaid.main([str(path)])
    lines = capsys.readouterr().out.splitlines()
    if code == 2:
        pytest.skip("no headless Chromium")
    assert code == 1
    assert lines[0].startswith("OK    nb.ipynb cell 0 diagram 1"), lines
    assert lines[1].startswith("ERROR nb.ipynb cell 1 diagram 2") and "Parse error" in lines[1]
    assert lines[-1].endswith("2 diagram(s) in 1 notebook(s), 1 failed")
    assert check_mermaid.main([str(path), "--min", "3"]) == 1
    good = _notebook(tmp_path, f"A.\n\n```mermaid\n{GOOD}```")
    assert check_mermaid.main([str(good)]) == 0
