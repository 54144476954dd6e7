"""tools/run_notebooks.py: failures never replace a good notebook; outputs are normalised."""

from __future__ import annotations

import importlib.util

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from conftest import REPO

spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "tools/run_notebooks.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)


def make_notebook(path, *sources, parameters=None):
    cells = []
    if parameters is not None:
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    cells += [new_code_cell(s) for s in sources]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_parse_value():
    assert runner._parse_value("5") == 5
    assert runner._parse_value("0.5") == 0.5
    assert runner._parse_value("True") is True
    assert runner._parse_value("None") is None
    assert runner._parse_value('["a", 2]') == ["a", 2]
    assert runner._parse_value("The cat sat.") == "The cat sat."


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999", "[1, NaN]"])
def test_nan_and_infinity_are_not_numbers(raw):
    assert runner._parse_value(raw) == raw  # text, which a number check then refuses


def test_course_order_puts_08_before_08b(tmp_path):
    for name in ["10_x.ipynb", "08b_decoding.ipynb", "08_architectures.ipynb", "00_w.ipynb",
                 "08_architectures.FAILED.ipynb", "notes.ipynb", "8_short.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in runner.course_notebooks(tmp_path)] == [
        "00_w.ipynb", "08_architectures.ipynb", "08b_decoding.ipynb", "10_x.ipynb"]


def test_normalise_strips_volatile_metadata_and_renumbers_widgets():
    view = "application/vnd.jupyter.widget-view+json"
    a, b = "a" * 32, "b" * 32
    nb = new_notebook(cells=[new_code_cell("w")])
    nb.metadata["papermill"] = {"start_time": "now"}
    nb.cells[0].metadata.update(papermill={"duration": 1.0}, execution={"t": 1})
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={view: {"model_id": b}})]
    nb.metadata["widgets"] = {runner.WIDGET_STATE: {"state": {
        b: {"state": {"layout": f"IPY_MODEL_{a}"}}, a: {"state": {}}}}}
    out = runner.normalise(nb)
    assert "papermill" not in out.metadata and out.cells[0].metadata == {}
    state = out.metadata["widgets"][runner.WIDGET_STATE]["state"]
    first, second = "c0c0" + "0" * 28, "c0c0" + "0" * 27 + "1"
    assert out.cells[0].outputs[0]["data"][view]["model_id"] == first
    assert state[first]["state"]["layout"] == f"IPY_MODEL_{second}"


@pytest.mark.slow
def test_failed_run_keeps_the_good_notebook_and_a_failed_copy(tmp_path):
    good = make_notebook(tmp_path / "01_x.ipynb", "print('fine')")
    before = good.read_bytes()
    bad_source = make_notebook(tmp_path / "bad.ipynb", "raise RuntimeError('boom')")
    with pytest.raises(Exception, match="boom"):
        runner.run_one(bad_source, good, {})
    assert good.read_bytes() == before
    assert (tmp_path / "01_x.FAILED.ipynb").exists()  # kept beside the output it would have been


@pytest.mark.slow
def test_failed_parameterised_run_is_kept_beside_its_output(tmp_path):
    (tmp_path / "nb").mkdir()
    source = make_notebook(tmp_path / "nb" / "p.ipynb", "assert N > 1, 'N too small'",
                           parameters="N = 5")
    output = tmp_path / "runs" / "p.ipynb"
    with pytest.raises(Exception, match="N too small"):
        runner.run_one(source, output, {"N": 0})
    assert (tmp_path / "runs" / "p.FAILED.ipynb").exists() and not output.exists()
    assert not (tmp_path / "nb" / "p.FAILED.ipynb").exists()  # the notebooks folder stays clean


@pytest.mark.slow
def test_successful_run_with_parameters_writes_the_output(tmp_path):
    source = make_notebook(tmp_path / "p.ipynb", "print(N * 2)", parameters="N = 1")
    output = tmp_path / "out" / "p.ipynb"
    runner.run_one(source, output, {"N": 21})
    nb = nbformat.read(output, as_version=4)
    assert output.stat().st_mode & 0o044 == 0o044  # readable by others, not mkstemp's 0600
    assert "papermill" not in nb.metadata
    assert nb.cells[-1].outputs[0].text.strip() == "42"
    assert "N = 1" in nbformat.read(source, as_version=4).cells[0].source  # input untouched


def test_normalise_merges_split_stream_outputs():
    nb = new_notebook(cells=[new_code_cell("print")])
    nb.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="a\n"),
        nbformat.v4.new_output("stream", name="stdout", text="b\nc\n"),
        nbformat.v4.new_output("stream", name="stderr", text="warn\n"),
        nbformat.v4.new_output("stream", name="stdout", text="d\n"),
    ]
    outputs = runner.normalise(nb).cells[0].outputs
    assert [(o.name, o.text) for o in outputs] == [
        ("stdout", "a\nb\nc\n"), ("stderr", "warn\n"), ("stdout", "d\n")]


def test_unknown_parameter_is_an_error_naming_the_real_ones(tmp_path):
    source = make_notebook(tmp_path / "p.ipynb", "print(N)", parameters="SEED = 0\nN: int = 1")
    assert runner.parameter_names(source) == ["SEED", "N"]
    runner.check_parameters(source, {"N": 2})  # known: fine
    with pytest.raises(ValueError, match=r"no parameter 'SENTENCE'.*defines: SEED, N"):
        runner.check_parameters(source, {"SENTENCE": "x"})


def test_a_name_papermill_cannot_parse_is_explained(tmp_path, capsys):
    source = make_notebook(tmp_path / "p.ipynb", "print(A)",
                           parameters="SEED = 0\nA, B = 1, 2\nC = 3  # C = three\nD = 4")
    assert runner.assigned_names(source) == ["SEED", "A", "B", "C", "D"]
    assert runner.parameter_names(source) == ["SEED", "D"]  # what papermill can inject
    with pytest.raises(ValueError, match=r"'B' is assigned on a line .* cannot parse"):
        runner.check_parameters(source, {"B": 5})
    runner.check_parameters(source, {"D": 5})
    assert "Unable to parse" not in capsys.readouterr().err  # papermill's warning is filtered


def test_output_into_notebooks_with_parameters_is_refused(tmp_path, capsys):
    source = make_notebook(tmp_path / "p.ipynb", "print(N)", parameters="N = 1")
    target = runner.NOTEBOOKS / "04_attention_from_scratch.ipynb"
    with pytest.raises(SystemExit) as exit_info:
        runner.main([str(source), "-p", "N", "3", "-o", str(target)])
    assert exit_info.value.code == 2
    assert "never writes into notebooks/" in capsys.readouterr().err


@pytest.mark.slow
def test_a_parameter_error_is_one_line_and_writes_nothing(tmp_path, capsys):
    check = "import course_utils.params as P\nN = P.integer('N', N, min=1)"
    source = make_notebook(tmp_path / "p.ipynb", check, "print(N)", parameters="N = 1")
    before = source.read_bytes()
    code = runner.main([str(source), "-p", "N", "0", "-o", str(tmp_path / "out" / "p.ipynb")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == ["p.ipynb: N: expected an integer ≥ 1, got 0 (int)"]
    assert source.read_bytes() == before and not (tmp_path / "out").exists()


def test_main_rejects_an_unknown_parameter_before_running(tmp_path, capsys):
    source = make_notebook(tmp_path / "p.ipynb", "print(N)", parameters="N = 1")
    with pytest.raises(SystemExit) as exit_info:
        runner.main([str(source), "-p", "M", "3", "-o", str(tmp_path / "o.ipynb")])
    assert exit_info.value.code == 2
    assert "no parameter 'M'" in capsys.readouterr().err
    assert not (tmp_path / "o.ipynb").exists()


def test_normalise_cuts_inlined_libraries_out_of_html_outputs():
    block = "/* course-asset d3@5.7.0 */\n(function(){ /* d3 code */ })\n/* end course-asset d3@5.7.0 */"
    html = f"<div id='v'></div><script>var lib = {{}};\n{block}\nview();</script>"
    nb = new_notebook(cells=[new_code_cell("view")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"text/html": html})]
    saved = runner.normalise(nb).cells[0].outputs[0]["data"]["text/html"]
    assert "d3 code" not in saved and "course-asset-not-saved d3@5.7.0" in saved
    assert saved.startswith("<div id='v'></div>") and saved.endswith("view();</script>")
