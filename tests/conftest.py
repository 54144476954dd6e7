"""Shared fixtures: the real bundled models, loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

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
