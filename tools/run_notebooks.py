"""Execute the course notebooks with papermill, safely and reproducibly.

    python tools/run_notebooks.py                      # every notebook, in order, in place
    python tools/run_notebooks.py notebooks/04_*.ipynb # just these, in place
    python tools/run_notebooks.py notebooks/05_multi_head_attention.ipynb \
        -p SENTENCE "The cat sat on the mat." -o runs/05_cat.ipynb   # parameters -> another file

Safety: each notebook runs into a temporary file; the committed notebook is replaced (an
atomic rename) only when the run succeeded. On failure the run is kept as
``NAME.FAILED.ipynb`` beside it, the good notebook is left untouched, and the script stops
with a non-zero exit code. Runs with parameters never touch the committed notebook: they
write to ``-o`` (default ``runs/NAME.ipynb``, ignored by git; ``-o`` into ``notebooks/`` is
refused), and a failed one is kept beside that output.

Parameters are checked twice. Here, against the names papermill itself finds in the
notebook's ``parameters`` cell (``papermill.inspect_notebook``): an unknown name is an error
listing the names that exist, and a name the cell assigns on a line papermill cannot parse
(``A, B = 1, 2``, or a trailing comment containing ``=``) is an error saying so. Values are
JSON (``5``, ``0.5``, ``true``/``True``, ``None``, ``'["a", "b"]'``), else text; ``NaN`` and
``Infinity`` are text, not numbers. Then in the notebook: the cell after the parameters
cell checks every value with ``course_utils.params``; a value it refuses ends the run with
one line, ``NB: NAME: expected …, got …``, exit code 1, and nothing written (no output, no
``.FAILED`` copy: the line says it all).

Nothing third-party is saved: JavaScript libraries inlined into outputs (bertviz views)
are cut out of the saved notebook (``strip_inlined`` in ``tools/assets.py``); the website
build puts them back from the verified cache.

Reproducibility: volatile metadata (timestamps, durations, papermill bookkeeping) is
stripped, split stream outputs are merged (nbconvert's ``CoalesceStreamsPreprocessor``) and
widget model ids are renumbered deterministically, so re-running an unchanged tree leaves
``git diff`` empty. A lock file (``filelock``, portable) serialises runs across processes
(parallel kernels race on ZMQ ports and share two CPU cores).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill
from filelock import FileLock
from nbconvert.preprocessors import CoalesceStreamsPreprocessor
from papermill.exceptions import PapermillExecutionError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))  # also when imported by path (tests)
import assets  # noqa: E402  (tools/assets.py: strip the inlined libraries before saving)

NOTEBOOKS = REPO / "notebooks"
RUNS = REPO / "runs"
LOCK = Path(tempfile.gettempdir()) / "inside-transformer-papermill.lock"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 600
# A course notebook: two digits, an optional letter (08b_ follows 08_), a name.
NOTEBOOK_NAME = re.compile(r"^\d\d[a-z]?_[^.]+\.ipynb$")


def course_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks in course order (sorted names: ``08_…`` before ``08b_…``)."""
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))


class _QuietPapermillParsing(logging.Filter):
    """Drop papermill's "Unable to parse line" / "Passed unknown parameter" warnings.

    The runner has already checked every name it passes against the names papermill can
    see, and reports a line papermill cannot parse with its own, clearer error; papermill's
    warnings would otherwise also appear for parameters it does inject.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Unable to parse line", "Passed unknown parameter"))


for _name in ("papermill", "papermill.translators"):
    logging.getLogger(_name).addFilter(_QuietPapermillParsing())


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


def normalise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip volatile metadata; merge split streams; renumber widget ids; return the notebook."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.metadata.pop("collapsed", None)
    # How a kernel splits one cell's prints into messages depends on timing, and would
    # otherwise show up as a diff.
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
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


class _HeldStderr:
    """What the kernel process wrote to the shared stderr during one run."""

    def __init__(self, path: Path) -> None:
        self.path, self.released = path, False

    def release(self) -> None:
        """Pass the held text on to the real stderr (once)."""
        if not self.released and self.path.exists():
            sys.stderr.write(self.path.read_text(errors="replace"))
            sys.stderr.flush()
        self.released = True


@contextlib.contextmanager
def _kernel_stderr_held():
    """Hold the kernel's stderr (it inherits file descriptor 2) until the run's end.

    A kernel shut down after a failed check cell can log ZMQ teardown noise; when the
    failure is a ``ParameterError`` the one-line message is the whole story, so that noise
    is dropped. Any other outcome passes the held text on unchanged.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.NamedTemporaryFile(prefix="course-kernel-stderr-", delete=False) as tmp:
        path = Path(tmp.name)
    held = _HeldStderr(path)
    sink = open(path, "wb")  # noqa: SIM115 - closed below, after fd 2 is restored
    os.dup2(sink.fileno(), 2)
    try:
        yield held
    except BaseException as error:
        sys.stderr.flush()
        os.dup2(saved, 2)
        if not is_parameter_error(error):
            held.release()
        raise
    else:
        sys.stderr.flush()
        os.dup2(saved, 2)
        held.release()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.close()
        path.unlink(missing_ok=True)


def failed_path(output: Path) -> Path:
    """Where a failed run is kept: beside its output (``runs/`` for parameterised runs)."""
    return output.with_name(output.stem + ".FAILED.ipynb")


def run_one(notebook: Path, output: Path, parameters: dict[str, object]) -> float:
    """Execute ``notebook`` into ``output`` (atomically); return seconds; raise on failure."""
    failed = failed_path(output)
    with tempfile.TemporaryDirectory(prefix="course-run-") as tmpdir:
        scratch = Path(tmpdir) / notebook.name
        try:
            with FileLock(LOCK), _kernel_stderr_held():
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
                    # The kernel's own log ("running over TCP without encryption" on
                    # loopback, "KeyboardInterrupt caught" when a cell fails) is not the
                    # notebook's output; a dead kernel is still reported by nbclient.
                    extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                    # Every cell has run and its outputs are in hand: stop the kernel at once
                    # (a graceful shutdown waits 1-3 s for a kernel holding a model to exit).
                    shutdown_kernel="immediate",
                )
                seconds = time.perf_counter() - start
        except BaseException as error:
            if scratch.exists() and not is_parameter_error(error):
                failed.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(scratch, failed)
            raise
        nb = normalise(nbformat.read(scratch, as_version=4))
        _write_atomically(nb, output)
    if failed.exists():
        failed.unlink()
    return seconds


def is_parameter_error(error: BaseException) -> bool:
    """The run stopped in a check cell: a ``course_utils.params.ParameterError``."""
    return isinstance(error, PapermillExecutionError) and error.ename == "ParameterError"


def _parameters_cell(notebook: Path) -> nbformat.NotebookNode | None:
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell
    return None


def assigned_names(notebook: Path) -> list[str]:
    """Every name the ``parameters`` cell assigns, as Python sees it (tuples unpacked)."""
    cell = _parameters_cell(notebook)
    if cell is None:
        return []
    names: list[str] = []

    def collect(target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                collect(element)

    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                collect(target)
        elif isinstance(node, ast.AnnAssign):
            collect(node.target)
    return names


def parameter_names(notebook: Path) -> list[str]:
    """The parameter names papermill finds in the ``parameters`` cell (in order)."""
    return list(papermill.inspect_notebook(str(notebook)))


def check_parameters(notebook: Path, parameters: dict[str, object]) -> None:
    """Raise ``ValueError`` naming any parameter papermill would not inject."""
    known = parameter_names(notebook)
    unknown = [name for name in parameters if name not in known]
    if not unknown:
        return
    unparsed = [name for name in unknown if name in assigned_names(notebook)]
    if unparsed:
        raise ValueError(
            f"{notebook.name}: {', '.join(map(repr, unparsed))} "
            f"{'is' if len(unparsed) == 1 else 'are'} assigned on a line of the parameters "
            "cell that papermill cannot parse (it needs one `NAME = value` per line, with "
            "comments on their own line), so it cannot be set; the cell's parseable "
            f"parameters are: {', '.join(known) or 'none'}"
        )
    raise ValueError(
        f"{notebook.name} has no parameter {', '.join(map(repr, unknown))}; its "
        f"parameters cell defines: {', '.join(known) or 'nothing (no cell tagged parameters)'}"
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf
        raise ValueError(text)
    return value


def _not_a_number(text: str) -> float:
    raise ValueError(text)  # NaN, Infinity, -Infinity: JSON extensions, not numbers


def _parse_value(raw: str) -> object:
    """``-p n 5`` gives an int, ``-p x 0.5`` a float, ``-p flag True`` a bool, ``None``,
    JSON lists/dicts; anything else (``NaN``, ``Infinity``, plain words) is text."""
    literal = {"True": "true", "False": "false", "None": "null"}.get(raw, raw)
    try:
        return json.loads(literal, parse_float=_finite_float, parse_constant=_not_a_number)
    except ValueError:  # json.JSONDecodeError is a ValueError
        return raw


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


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
        if args.output and (
            _inside(args.output.resolve(), NOTEBOOKS) or args.output.resolve() == notebooks[0]
        ):
            parser.error(
                f"-o {args.output}: a run with -p never writes into {NOTEBOOKS.relative_to(REPO)}/ "
                "(the committed notebooks); leave out -o (runs/NAME) or choose another folder"
            )
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
        print(f"running {notebook.relative_to(REPO) if _inside(notebook, REPO) else notebook} ...",
              flush=True)
        try:
            seconds = run_one(notebook, output, parameters)
        except Exception as error:
            if is_parameter_error(error):
                # The check cell refused a value: its message is the whole story.
                print(f"{notebook.name}: {error.evalue}", file=sys.stderr)
                return 1
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
