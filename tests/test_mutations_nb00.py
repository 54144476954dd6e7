"""Mutation tests for notebook 00's checker: typical wrong token counts fail, specifically."""

from __future__ import annotations

import pytest
from mutation import Mutant, run_mutant, run_reference

from course_utils.solutions import nb00 as solutions

MODULE = "nb00"

MUTANTS = [
    Mutant("check_count_tokens", "special tokens counted",
           lambda text, tok: len(tok(text)["input_ids"]), expect="special tokens"),
    Mutant("check_count_tokens", "characters counted", lambda text, tok: len(text), expect="number of characters"),
    Mutant("check_count_tokens", "words counted", lambda text, tok: len(text.split()), expect="number of words"),
    Mutant("check_count_tokens", "returns the ids", lambda text, tok: tok(text, add_special_tokens=False)["input_ids"],
           expect="expected an int"),
]
REFERENCES = {"check_count_tokens": solutions.count_tokens}


@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_mutant(mutant):
    run_mutant(MODULE, mutant)


@pytest.mark.parametrize("checker", sorted(REFERENCES))
def test_reference_passes(checker):
    run_reference(MODULE, checker, REFERENCES[checker])
