"""Execute the course notebooks with papermill, safely and reproducibly.

    python tools/run_notebooks.py                      # every notebook, in order, in place
    python tools/run_notebooks.py notebooks/04_*.ipynb # just these, in place
    python tools/run_notebooks.py notebooks/05_multi_head_attention.ipynb \
        -p SENTENCE "The cat sat on the mat." -o runs/05_cat.ipynb   # parameters -> another file

Safety: each notebook runs into a temporary file; the committed notebook is replaced (an
atomic rename) only when the run succeeded. On failure the run is kept as
``NAME.FAILED.ipynb`` beside it, the good notebook is left untouched, and the script stops
with a non-zero exit code. Runs with parameters never touch the committed notebook: they
write to ``-o`` (default ``runs/NAME.ipynb``, ignored by git), and a failed one is kept
beside that output.

Parameters are checked against the notebook's ``parameters`` cell: an unknown name is an
error listing the names that exist (papermill alone would ignore it silently).

Nothing third-party is saved: JavaScript libraries inlined into outputs (bertviz views)
are cut out of the saved notebook (``course_utils.assets.strip_inlined``); the website
build puts them back from the verified cache.

Reproducibility: volatile metadata (timestamps, durations, papermill bookkeeping) is
stripped and widget model ids are renumbered deterministically, so re-running an unchanged
tree leaves ``git diff`` empty. A lock file serialises runs across processes (parallel
kernels race on ZMQ ports and share two CPU cores).
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

from course_utils import assets

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
RUNS = REPO / "runs"
LOCK = Path(tempfile.gettempdir()) / "inside-transformer-papermill.lock"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 600


def course_notebooks() -> list[Path]:
    """The numbered notebooks, in course order."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if ".FAILED" not in p.name)


def _widget_id_order(nb: nbformat.NotebookNode) -> list[str]:
    """Widget model ids in a deterministic order: outputs first, then references (BFS)."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    if not state:
        return []
    order: list[str] = []
    seen: set[str] = set()
    queue: list[str] = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view and view.get("model_id") in state and view["model_id"] not in seen:
                seen.add(view["model_id"])
                queue.append(view["model_id"])
    while queue:
        model_id = queue.pop(0)
        order.append(model_id)
        text = json.dumps(state[model_id], sort_keys=True)
        for ref in re.findall(r"IPY_MODEL_([0-9a-f]{32})", text):
            if ref in state and ref not in seen:
                seen.add(ref)
                queue.append(ref)
    # Models no output or reference reaches: order by content, which is deterministic.
    rest = [m for m in state if m not in seen]
    rest.sort(key=lambda m: json.dumps(state[m], sort_keys=True))
    return order + rest


def _coalesce_streams(outputs: list) -> list:
    """Merge consecutive stdout (or stderr) chunks: how a kernel splits one cell's prints
    into messages depends on timing, and would otherwise show up as a diff."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (
            output.get("output_type") == "stream"
            and previous is not None
            and previous.get("output_type") == "stream"
            and previous.get("name") == output.get("name")
        ):
            previous["text"] = _text(previous["text"]) + _text(output["text"])
        else:
            merged.append(output)
    return merged


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def normalise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip volatile metadata; renumber widget ids; return the same notebook."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.metadata.pop("collapsed", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = _coalesce_streams(cell.outputs)
    assets.map_html_outputs(nb, assets.strip_inlined)
    ids = _widget_id_order(nb)
    if ids:
        text = json.dumps(nb)
        for index, model_id in enumerate(ids):
            text = text.replace(model_id, f"c0c0{index:028x}")
        nb = nbformat.from_dict(json.loads(text))
    return nb


def _write_atomically(nb: nbformat.NotebookNode, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        nbformat.write(nb, tmp)
        # mkstemp makes the file private (0600); give it the mode a normal write would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def failed_path(output: Path) -> Path:
    """Where a failed run is kept: beside its output (``runs/`` for parameterised runs)."""
    return output.with_name(output.stem + ".FAILED.ipynb")


def run_one(notebook: Path, output: Path, parameters: dict[str, object]) -> float:
    """Execute ``notebook`` into ``output`` (atomically); return seconds; raise on failure."""
    failed = failed_path(output)
    with tempfile.TemporaryDirectory(prefix="course-run-") as tmpdir:
        scratch = Path(tmpdir) / notebook.name
        start = time.perf_counter()
        try:
            with open(LOCK, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                start = time.perf_counter()
                papermill.execute_notebook(
                    str(notebook),
                    str(scratch),
                    parameters=parameters or None,
                    cwd=str(notebook.parent),
                    kernel_name="python3",
                    progress_bar=False,
                    log_output=False,
                    execution_timeout=CELL_TIMEOUT_S,
                )
        except BaseException:
            if scratch.exists():
                failed.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(scratch, failed)
            raise
        seconds = time.perf_counter() - start
        nb = normalise(nbformat.read(scratch, as_version=4))
        _write_atomically(nb, output)
    if failed.exists():
        failed.unlink()
    return seconds


def parameter_names(notebook: Path) -> list[str]:
    """Names assigned in the notebook's cell tagged ``parameters`` (in order)."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            names = []
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign) else [])
                names += [t.id for t in targets if isinstance(t, ast.Name)]
            return names
    return []


def check_parameters(notebook: Path, parameters: dict[str, object]) -> None:
    """Raise ``ValueError`` naming any parameter the notebook does not define."""
    known = parameter_names(notebook)
    unknown = [name for name in parameters if name not in known]
    if unknown:
        raise ValueError(
            f"{notebook.name} has no parameter {', '.join(map(repr, unknown))}; its "
            f"parameters cell defines: {', '.join(known) or 'nothing (no cell tagged parameters)'}"
        )


def _parse_value(raw: str) -> object:
    """``-p n 5`` gives an int, ``-p x 0.5`` a float, ``-p flag True`` a bool; else text."""
    literal = {"True": "true", "False": "false", "None": "null"}.get(raw, raw)
    try:
        return json.loads(literal)
    except json.JSONDecodeError:
        return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="papermill parameter (repeatable)")
    parser.add_argument("-o", "--output", type=Path,
                        help="output notebook (one input only; default with -p: runs/NAME)")
    args = parser.parse_args(argv)

    notebooks = [p.resolve() for p in args.notebooks] or course_notebooks()
    for notebook in notebooks:
        if not notebook.is_file():
            parser.error(f"no such notebook: {notebook}")
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    if (parameters or args.output) and len(notebooks) != 1:
        parser.error("-p/-o take exactly one notebook")
    if parameters:
        try:
            check_parameters(notebooks[0], parameters)
        except ValueError as error:
            parser.error(str(error))

    timings: list[tuple[str, float]] = []
    for notebook in notebooks:
        if args.output:
            output = args.output.resolve()
        elif parameters:
            output = RUNS / notebook.name
        else:
            output = notebook
        print(f"running {notebook.relative_to(REPO)} ...", flush=True)
        try:
            seconds = run_one(notebook, output, parameters)
        except Exception as error:
            failed = failed_path(output)
            print(f"\nFAILED: {notebook.name}: {type(error).__name__}: {str(error)[:2000]}",
                  file=sys.stderr)
            print(f"The committed notebook is unchanged; the failed run is in {failed}.",
                  file=sys.stderr)
            _print_table(timings)
            return 1
        timings.append((notebook.name, seconds))
        where = "" if output == notebook else f" -> {output}"
        print(f"  ok in {seconds:.1f} s{where}", flush=True)
    _print_table(timings)
    return 0


def _print_table(timings: list[tuple[str, float]]) -> None:
    if not timings:
        return
    width = max(len(name) for name, _ in timings)
    print(f"\n{'notebook'.ljust(width)}  seconds")
    for name, seconds in timings:
        print(f"{name.ljust(width)}  {seconds:7.1f}")
    print(f"{'total'.ljust(width)}  {sum(s for _, s in timings):7.1f}")


if __name__ == "__main__":
    sys.exit(main())
