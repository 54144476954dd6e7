"""Used in notebooks 01, 03–08, 13: the learner's workspace, the pieces you build, kept for later notebooks.

Used in notebooks 01, 03, 04, 05, 06, 07, 08 and 13 (every notebook with a ``%%exercise``
cell, and the ones that build on earlier pieces).

A code cell that starts with ``%%exercise PIECE`` runs like any other cell. In learner mode
its source is also saved to ``my_transformer/PIECE.py`` beside the notebooks (git-ignored;
``COURSE_LEARNER_DIR`` moves it). Later notebooks call :func:`use_pieces`, which executes
the saved pieces, in course order, into **one** namespace: the Llama block you write in 08
calls *your* ``apply_rope`` from 03 and *your* ``GroupedQueryAttention`` from 05, and the
capstone (13) assembles only code you wrote into a full SmolLM2.

A piece you have not attempted yet (its stub still raises ``NotImplementedError``), or one
that crashes on a tiny probe input, is replaced by the course's reference solution, and
:func:`use_pieces` says so, so every notebook still runs top to bottom. In unattended runs
(``COURSE_FILL_SOLUTIONS=1``: ``task run``, ``task test``, CI) the workspace is neither read
nor written: the reference solutions are used throughout.

Because a piece is executed on its own, an ``%%exercise`` cell must be self-contained: it
may use ``math``, ``numpy as np``, ``regex``, ``torch``, ``nn``, ``F`` and the names earlier
pieces define — no other variables of the notebook.

The pieces (their names and signatures are the contract the checkers and the capstone use):

========== ======== ===============================================================
piece      notebook defines
========== ======== ===============================================================
bpe        01       ``train_bpe``, ``encode``
rope       03       ``apply_rope``
masks      06       ``causal_mask``, ``padding_mask``, ``sliding_window_mask``
attention  04       ``SelfAttention``
gqa        05       ``GroupedQueryAttention``
llama      08       ``RMSNorm``, ``SwiGLU``, ``LlamaBlock``, ``generate_greedy``
model      13       ``MySmolLM2``
========== ======== ===============================================================
"""

from __future__ import annotations

import importlib
import linecache
import os
import sys
import types
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from course_utils.exercises import CheckTimeout, filling_solutions, time_limit

LEARNER_DIR_ENV = "COURSE_LEARNER_DIR"


@dataclass(frozen=True)
class Piece:
    """One piece of the learner's transformer."""

    name: str
    notebook: str  # "01", "03", …
    names: tuple[str, ...]  # the public names the piece defines

    @property
    def reference_module(self) -> str:
        return f"course_utils.solutions.nb{self.notebook}"


PIECES: dict[str, Piece] = {
    piece.name: piece
    for piece in (
        Piece("bpe", "01", ("train_bpe", "encode")),
        Piece("rope", "03", ("apply_rope",)),
        Piece("masks", "06", ("causal_mask", "padding_mask", "sliding_window_mask")),
        Piece("attention", "04", ("SelfAttention",)),
        Piece("gqa", "05", ("GroupedQueryAttention",)),
        Piece("llama", "08", ("RMSNorm", "SwiGLU", "LlamaBlock", "generate_greedy")),
        Piece("model", "13", ("MySmolLM2",)),
    )
}
"""Every piece, in the order they are executed into one namespace (dependencies first)."""

PREAMBLE = (
    "import math\n"
    "import numpy as np\n"
    "import regex\n"
    "import torch\n"
    "import torch.nn.functional as F\n"
    "from torch import nn\n"
)
"""What every saved piece may use without importing it."""

PROBE_TIMEOUT_S = 10.0


class PieceError(ValueError):
    """An unknown piece name (or a piece file that cannot be used)."""


def _piece(name: object) -> Piece:
    if not isinstance(name, str) or name not in PIECES:
        raise PieceError(
            f"unknown exercise piece {name!r}: expected one of {', '.join(PIECES)}"
        )
    return PIECES[name]


def workspace_dir() -> Path:
    """Where the pieces are saved: ``$COURSE_LEARNER_DIR`` or ``./my_transformer``.

    JupyterLab and the course runner start kernels in ``notebooks/``, so by default this is
    ``notebooks/my_transformer/``.
    """
    configured = os.environ.get(LEARNER_DIR_ENV)
    return Path(configured) if configured else Path.cwd() / "my_transformer"


def piece_path(name: str) -> Path:
    """The file a piece is saved to."""
    return workspace_dir() / f"{_piece(name).name}.py"


def save_piece(name: str, source: str) -> Path | None:
    """Save ``source`` as the learner's version of ``name`` (learner mode only).

    Returns the path written, or ``None`` in an unattended run (the workspace is left alone).
    """
    piece = _piece(name)
    if filling_solutions():
        return None
    folder = workspace_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{piece.name}.py"
    header = (
        f"# Your piece {piece.name!r}, saved by the %%exercise cell in notebook {piece.notebook}.\n"
        "# Edit it there and re-run that cell: this file is overwritten each time.\n"
    )
    path.write_text(header + PREAMBLE + "\n" + source.rstrip() + "\n", encoding="utf-8")
    return path


# --- the cell magic ---------------------------------------------------------------------


def exercise(line: str, cell: str) -> None:
    """``%%exercise PIECE``: run the cell, and save it as the learner's piece ``PIECE``."""
    from IPython import get_ipython

    shell = get_ipython()
    name = line.strip()
    if name not in PIECES:
        print(f"%%exercise: unknown piece {name!r}; expected one of: {', '.join(PIECES)}. "
              "The cell was not run.")
        return
    save_piece(name, cell)
    python = shell.transform_cell(cell) if shell is not None else cell
    filename = f"<exercise {name}>"
    linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
    namespace = shell.user_ns if shell is not None else {}
    preamble: dict = {}
    exec(compile(PREAMBLE, "<my_transformer preamble>", "exec"), preamble)  # noqa: S102
    for key, value in preamble.items():  # what a saved piece may use; never shadow the notebook's
        if not key.startswith("__"):
            namespace.setdefault(key, value)
    exec(compile(python, filename, "exec"), namespace)  # noqa: S102 - the learner's own cell


def _register_magic() -> None:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is part of the course stack
        return
    shell = get_ipython()
    if shell is not None:
        shell.register_magic_function(exercise, magic_kind="cell", magic_name="exercise")


def load_ipython_extension(shell) -> None:
    """``%load_ext course_utils.learner`` also registers the magic."""
    shell.register_magic_function(exercise, magic_kind="cell", magic_name="exercise")


_register_magic()


# --- probes: is a piece attempted? -------------------------------------------------------


def _probe_bpe(ns: dict) -> None:
    vocab = {b"a": 0, b"b": 1, b"ab": 2}
    ns["encode"]("ab", [(b"a", b"b")], vocab, lambda text: [text])
    ns["train_bpe"]("abab", 1, lambda text: [text])


def _probe_rope(ns: dict) -> None:
    import torch

    ns["apply_rope"](torch.ones(1, 1, 2, 4), torch.arange(2), 10000.0)


def _probe_masks(ns: dict) -> None:
    import torch

    ns["causal_mask"](3)
    ns["padding_mask"](torch.ones(1, 3, dtype=torch.long))
    ns["sliding_window_mask"](3, 2)


def _probe_attention(ns: dict) -> None:
    import torch

    ns["SelfAttention"](8, 2)(torch.zeros(1, 3, 8))


def _probe_gqa(ns: dict) -> None:
    import torch

    ns["GroupedQueryAttention"](8, 2, 1)(torch.zeros(1, 3, 8), torch.arange(3))


def _probe_llama(ns: dict) -> None:
    import torch

    ns["RMSNorm"](8, 1e-6)(torch.ones(1, 3, 8))
    ns["SwiGLU"](8, 16)(torch.ones(1, 3, 8))
    ns["LlamaBlock"](8, 2, 1, 16, 1e-6, 10000.0)(torch.zeros(1, 3, 8), torch.arange(3))

    def step(ids, positions, past):
        return torch.zeros(1, ids.shape[1], 4), past

    ns["generate_greedy"](step, [1, 2], 2)


def _probe_model(ns: dict) -> None:
    import torch
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    ns["MySmolLM2"](config)(torch.zeros(1, 3, dtype=torch.long), torch.arange(3))


PROBES: dict[str, Callable[[dict], None]] = {
    "bpe": _probe_bpe, "rope": _probe_rope, "masks": _probe_masks, "attention": _probe_attention,
    "gqa": _probe_gqa, "llama": _probe_llama, "model": _probe_model,
}


# --- loading pieces ----------------------------------------------------------------------


@dataclass(frozen=True)
class PieceStatus:
    """Where a loaded piece came from."""

    piece: str
    yours: bool
    reason: str  # "yours", "not attempted", "unattended run", "raised …", "no file"

    def __str__(self) -> str:
        notebook = PIECES[self.piece].notebook
        if self.yours:
            return f"{self.piece} (notebook {notebook}): yours, from {piece_path(self.piece)}"
        return f"{self.piece} (notebook {notebook}): course reference ({self.reason})"


def _reference(piece: Piece) -> dict:
    module = importlib.import_module(piece.reference_module)
    missing = [name for name in piece.names if not hasattr(module, name)]
    if missing:
        raise PieceError(f"{piece.reference_module} lacks {', '.join(missing)} (piece {piece.name!r})")
    return {name: getattr(module, name) for name in piece.names}


def _learner_version(piece: Piece, module: types.ModuleType) -> tuple[dict | None, str]:
    """Execute the learner's file into ``module``; return its names, or None and why not."""
    path = piece_path(piece.name)
    if not path.exists():
        return None, f"not attempted: no {path.name} yet (run the %%exercise cell in notebook {piece.notebook})"
    source = path.read_text(encoding="utf-8")
    trial = dict(module.__dict__)
    try:
        with time_limit(PROBE_TIMEOUT_S):
            exec(compile(source, str(path), "exec"), trial)  # noqa: S102 - the learner's own file
    except Exception as error:  # the learner's code: report, fall back
        return None, f"{path.name} raised {type(error).__name__}: {error}"
    missing = [name for name in piece.names if name not in trial]
    if missing:
        return None, f"{path.name} does not define {', '.join(missing)}"
    probe_ns = dict(trial)
    try:
        with time_limit(PROBE_TIMEOUT_S):
            PROBES[piece.name](probe_ns)
    except NotImplementedError:
        return None, "not attempted"
    except CheckTimeout:
        return None, f"stopped after {PROBE_TIMEOUT_S:g} s on a tiny input (an infinite loop?)"
    except Exception as error:
        return None, f"it raised {type(error).__name__} on a tiny input: {error}"
    return {name: trial[name] for name in piece.names} | {
        key: value for key, value in trial.items() if not key.startswith("__")
    }, "yours"


def use_pieces(
    namespace: MutableMapping[str, object] | None = None, *pieces: str, verbose: bool = True
) -> dict[str, PieceStatus]:
    """Load the learner's pieces (or the references) and put their names into ``namespace``.

    ``use_pieces(globals(), "rope", "gqa")`` defines ``apply_rope`` and
    ``GroupedQueryAttention`` in the notebook: yours when you have written them (saved by
    their ``%%exercise`` cells), the course's reference otherwise. The pieces are executed
    in course order into one module, ``my_transformer``, so a later piece calls the earlier
    ones you wrote. Returns a :class:`PieceStatus` per piece and, with ``verbose``, prints
    where each came from.
    """
    wanted = [_piece(name) for name in pieces] if pieces else list(PIECES.values())
    order = [piece for piece in PIECES.values() if piece in wanted]
    module = types.ModuleType("my_transformer", "The learner's pieces, executed in course order.")
    exec(compile(PREAMBLE, "<my_transformer preamble>", "exec"), module.__dict__)  # noqa: S102
    sys.modules["my_transformer"] = module
    statuses: dict[str, PieceStatus] = {}
    for piece in order:
        if filling_solutions():
            names, reason = None, "unattended run: COURSE_FILL_SOLUTIONS=1"
        else:
            names, reason = _learner_version(piece, module)
        if names is None:
            names = _reference(piece)
            statuses[piece.name] = PieceStatus(piece.name, False, reason)
        else:
            statuses[piece.name] = PieceStatus(piece.name, True, "yours")
        module.__dict__.update(names)
        if namespace is not None:
            namespace.update({name: names[name] for name in piece.names})
    if verbose:
        yours = sum(status.yours for status in statuses.values())
        print(f"Pieces: {yours} of {len(statuses)} are yours.")
        for status in statuses.values():
            print(f"  {'✔' if status.yours else '○'} {status}")
    return statuses
