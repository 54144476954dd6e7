"""Used in notebook 09 (through ``rag``): where the data files are, in a source checkout or an installed wheel.

Used in notebook 09 (through ``course_utils.rag``) and by the tests.

In a checkout the files live in the repository's top-level ``data/`` (documented there);
a built wheel carries the same files as package data, ``course_utils/_data/`` (see
``[tool.setuptools]`` in ``pyproject.toml``), so a notebook copied anywhere — Colab, a
learner's own Jupyter — finds them without the repository. ``$COURSE_DATA_DIR``
overrides both. (Models and fetched JavaScript live in ``course_utils.models.cache_dir()``.)
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def data_dir() -> Path:
    """The folder holding the course's data files (JSONL corpora, questions, README)."""
    env = os.environ.get("COURSE_DATA_DIR")
    if env:
        return Path(env)
    checkout = PACKAGE.parent / "data"
    if (PACKAGE.parent / "pyproject.toml").exists() and checkout.is_dir():
        return checkout
    installed = PACKAGE / "_data"
    if installed.is_dir():
        return installed
    raise FileNotFoundError(
        f"course data not found: looked for {checkout} (a source checkout) and {installed} "
        "(an installed wheel); set COURSE_DATA_DIR to the folder holding knowledge_base.jsonl"
    )
