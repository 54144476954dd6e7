"""Shared fixtures: the real bundled models, loaded once per test session."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
# A course notebook: two digits, an optional letter (08b_ follows 08_), a name; the runner
# (tools/run_notebooks.py) uses the same pattern.
NOTEBOOK_NAME = re.compile(r"^\d\d[a-z]?_[^.]+\.ipynb$")
NOTEBOOK_PATHS = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))
"""The course notebooks in course order (sorted names: ``08_…`` before ``08b_…``)."""

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def encoder():
    from course_utils.models import load_encoder

    return load_encoder()


@pytest.fixture(scope="session")
def decoder():
    from course_utils.models import load_decoder

    return load_decoder()


@pytest.fixture
def learner_mode(monkeypatch):
    """Checkers judge the function they are given (no reference filled in for stubs)."""
    monkeypatch.setenv("COURSE_FILL_SOLUTIONS", "0")


PADDED_PAIR = ["The animal didn't cross the street because it was too tired.", "Short one."]
"""Two sentences of different lengths: a padded batch for MiniLM equality tests."""
