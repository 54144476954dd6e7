"""Every committed notebook is executed, in order, error-free, small and conventional."""

from __future__ import annotations

import re
import sys

import nbformat
import pytest

from conftest import NOTEBOOK_PATHS, NOTEBOOKS, REPO

sys.path.insert(0, str(REPO / "tools"))
import assets  # noqa: E402  (tools/assets.py)

MAX_BYTES = 2 * 1024 * 1024


def test_there_are_notebooks():
    assert NOTEBOOK_PATHS, "no notebooks found"
    assert NOTEBOOK_PATHS[0].name == "00_welcome.ipynb"


def test_no_failed_runs_left_behind():
    assert not list(NOTEBOOKS.glob("*.FAILED.ipynb"))


@pytest.fixture(params=NOTEBOOK_PATHS, ids=lambda p: p.name)
def notebook(request):
    path = request.param
    return path, nbformat.read(path, as_version=4)


def test_size_under_2mb(notebook):
    path, _ = notebook
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"


def test_kernelspec_is_python3(notebook):
    _, nb = notebook
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_every_code_cell_executed_in_order(notebook):
    path, nb = notebook
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert None not in counts, f"{path.name}: unexecuted code cells"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: out of order {counts}"


def test_no_error_outputs(notebook):
    path, nb = notebook
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{path.name} cell {index}: {output.get('ename')}"
            if output.output_type == "stream" and output.name == "stderr":
                assert "Traceback" not in output.text, f"{path.name} cell {index}: traceback"


def test_no_volatile_metadata(notebook):
    path, nb = notebook
    assert "papermill" not in nb.metadata
    for cell in nb.cells:
        assert "papermill" not in cell.metadata and "execution" not in cell.metadata


def test_parameters_cell_near_the_top(notebook):
    path, nb = notebook
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code_cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters'"
    assert tagged[0] <= 2, f"{path.name}: the parameters cell should come first"
    assert re.search(r"^SEED\s*=", code_cells[tagged[0]].source, re.M), "SEED parameter missing"


def test_seeds_everything_early(notebook):
    path, nb = notebook
    code = [c.source for c in nb.cells if c.cell_type == "code"][:4]
    assert any("seed_everything(SEED" in source for source in code), (
        f"{path.name}: call seed_everything(SEED) in the first code cells"
    )


def test_figures_are_png_only(notebook):
    path, nb = notebook
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert "image/svg+xml" not in output.get("data", {}), f"{path.name}: SVG output"


def test_no_third_party_code_saved(notebook):
    """JavaScript libraries inlined into views are cut out when a notebook is saved."""
    path, nb = notebook
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html", "")
            html = "".join(html) if isinstance(html, list) else html
            assert not assets.has_inlined(html), f"{path.name} cell {index}: inlined library"
            assert "d3js.org" not in html and "jQuery v3" not in html, (
                f"{path.name} cell {index}: third-party code in an output")


# Diagrams (issue 18): Mermaid in markdown, rendered by JupyterLab and the offline site.
MIN_DIAGRAMS = 2


def test_every_notebook_has_diagrams(notebook):
    from check_mermaid import diagrams_in  # tools/check_mermaid.py (tools is on sys.path)

    path, _ = notebook
    found = diagrams_in(path)
    assert len(found) >= MIN_DIAGRAMS, (
        f"{path.name} has {len(found)} Mermaid diagram(s); every notebook needs at least "
        f"{MIN_DIAGRAMS} (```mermaid blocks in markdown cells; check them with "
        "`python tools/check_mermaid.py`)")


def test_diagrams_keep_plain_syntax(notebook):
    """What renders the same in JupyterLab and on the site: no init directives, no HTML
    in labels except ``<br/>``, and a sentence before the diagram saying what to see."""
    from check_mermaid import MERMAID_BLOCK

    path, nb = notebook
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for match in MERMAID_BLOCK.finditer(cell.source):
            code = match["code"]
            where = f"{path.name} cell {index}"
            assert "%%{" not in code, f"{where}: no %%{{init}} directives in diagrams"
            tags = set(re.findall(r"</?\s*([a-zA-Z]+)[^>]*>", code)) - {"br"}
            assert not tags, f"{where}: HTML {sorted(tags)} in a diagram (only <br/>)"
            before = cell.source[: match.start()].strip()
            previous = nb.cells[index - 1] if index else None
            assert before or (previous is not None and previous.cell_type == "markdown"), (
                f"{where}: put a sentence above the diagram saying what to see")
