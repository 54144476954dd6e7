"""Every notebook parameter an instructor can set is checked: bad values get one clear error.

For each notebook, the values its ``parameters`` cell assigns are turned into bad values
by type (empty or blank text, the wrong type, 0 / negative / huge sizes, NaN and infinity
for numbers, a ~10 000-word text, empty lists, lists of the wrong length, a bad item, a
word that is no longer in its sentence where the defaults have that relation). Each bad
value is put in the way papermill puts it (after the parameters cell), and only the
parameters cell and the check cell after it run, in a fresh namespace: fast, no model.
The check must raise ``course_utils.params.ParameterError`` naming the parameter.

Slow tests then run each notebook through the real runner with one bad value: the
instructor sees one line, and the committed notebook is untouched.

``python tests/test_parameters.py`` prints, per notebook, how many bad values were tried
and which ones pass silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import NOTEBOOK_PATHS, REPO
from course_utils.params import ParameterError

spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "tools/run_notebooks.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)

TOO_LONG = " ".join(["word"] * 10_000)  # ~10 000 tokens: beyond every bundled model
HUGE_INT = 10**20  # beyond any size, and beyond torch's 64-bit seed
HUGE_FLOAT = 1e12
NO_MATCH_SENTENCE = "Nothing here matches at all."
NO_MATCH_WORD = "zebra"

# Zero is a size only for sizes: indices, offsets, overlaps and warm-ups may be 0.
ZERO_ALLOWED = re.compile(r"(_LAYER|_INDEX|_OFFSET|OVERLAP|WARMUP)$")

# Values that look bad by type, or break a relation the defaults only happen to have, but
# are allowed on purpose: (notebook prefix, name) -> {case label: why}. Everything not
# listed must be refused.
ALLOWED: dict[tuple[str, str], dict[str, str]] = {
    ("01_", "PRICE_PER_MILLION_TOKENS"): {"zero": "a free API is a price too; cost 0 is printed"},
    ("03_", "SHIFT_QUERY_WORD"): {
        "a word not in PERMUTATION_SENTENCE": "a word of its own (one token), not from that sentence"},
    ("03_", "PERMUTATION_SENTENCE"): {
        "a sentence without SHIFT_QUERY_WORD ('cat')": "the two are unrelated; 'cat' is a coincidence"},
    ("06_", "PASSAGES"): {"one item instead of a pair": "any number of passages from 1 on"},
    ("06_", "MLM_PROBABILITY"): {"zero": "the cell then prints that it chose 0 tokens"},
    ("10_", "TARGET_TIME_RATIO"): {"huge": "a goal the cell reports as met or missed, never asserted"},
    ("10_", "TARGET_MEMORY_RATIO"): {"huge": "a goal the cell reports as met or missed, never asserted"},
    ("11_", "DECODER_TEXT"): {
        "a sentence without PRONOUN ('it')": "the decoder text need not contain the pronoun"},
    ("12_", "TARGET_LOSS"): {"huge": "the instructor's target; the cell asserts it as given"},
    ("12_", "REAL_WORD_TARGET"): {"zero": "the instructor's target; the cell asserts it as given"},
}


@dataclass
class Case:
    """One bad value for one parameter, and the names its error may cite."""

    name: str
    label: str
    value: Any
    names: tuple[str, ...] = field(default=())

    def cites(self) -> tuple[str, ...]:
        return self.names or (self.name,)


@dataclass
class Notebook:
    path: Path
    parameters: str  # source of the cell tagged parameters
    check: str | None  # source of the code cell after it, if it uses course_utils.params
    check_outputs: list
    names: list[str]  # every name the parameters cell assigns
    defaults: dict[str, Any]


def _is_check_cell(source: str) -> bool:
    return bool(re.search(r"course_utils\.params|from course_utils import params", source))


@cache
def load(path: Path) -> Notebook:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    index = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
    parameters = code[index].source
    following = code[index + 1] if index + 1 < len(code) else None
    check = following.source if following is not None and _is_check_cell(following.source) else None
    namespace: dict[str, Any] = {}
    exec(compile(parameters, f"{path.name}:parameters", "exec"), namespace)
    names = runner.assigned_names(path)
    return Notebook(path, parameters, check, following.get("outputs", []) if check else [],
                    names, {n: namespace[n] for n in names})


# -- bad values from the defaults ---------------------------------------------------------


def _is_word(value: Any) -> bool:
    return isinstance(value, str) and bool(re.fullmatch(r"\w[\w'-]{0,29}", value.strip()))


def _is_sentence(value: Any) -> bool:
    return isinstance(value, str) and len(value.split()) > 1


def _occurs(word: str, sentence: str) -> bool:
    return bool(re.search(rf"(?<!\w){re.escape(word.strip())}(?!\w)", sentence, re.IGNORECASE))


def _texts(value: Any) -> list[str] | None:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _scalar_cases(name: str, value: Any) -> list[Case]:
    """Bad values for one scalar (or None) parameter, from the type of its default."""
    if isinstance(value, bool):
        return [Case(name, "text instead of a bool", "yes"), Case(name, "1 instead of a bool", 1),
                Case(name, "None", None)]
    if isinstance(value, int):
        cases = [Case(name, "text instead of an integer", str(value)),
                 Case(name, "a fraction", value + 0.5), Case(name, "None", None),
                 Case(name, "a bool", True), Case(name, "negative", -1),
                 Case(name, "huge", HUGE_INT)]
        if value >= 1 and not ZERO_ALLOWED.search(name):
            cases.append(Case(name, "zero", 0))
        return cases
    if isinstance(value, float):
        cases = [Case(name, "NaN", math.nan), Case(name, "infinity", math.inf),
                 Case(name, "text instead of a number", str(value)), Case(name, "None", None),
                 Case(name, "negative", -1.0), Case(name, "huge", HUGE_FLOAT)]
        if value > 0:
            cases.append(Case(name, "zero", 0.0))
        return cases
    if isinstance(value, str):
        return [Case(name, "empty text", ""), Case(name, "blank text", "   "),
                Case(name, "a number instead of text", 5), Case(name, "None", None),
                Case(name, "a list instead of text", [value]),
                Case(name, "a ~10 000-word text", TOO_LONG)]
    if value is None:  # a model name: None means the bundled model
        return [Case(name, "empty model name", ""), Case(name, "blank model name", "  "),
                Case(name, "a number instead of a model name", 5),
                Case(name, "a list instead of a model name", ["gpt2"])]
    return []


def _item_cases(name: str, items: list[Any]) -> list[Case]:
    """Bad items for a list/tuple parameter (first item replaced)."""
    first = items[0]
    out: list[Case] = []
    for case in _scalar_cases(f"{name}[0]", first):
        if case.label in ("None", "a bool", "1 instead of a bool"):
            continue
        out.append(Case(name, f"item 0: {case.label}", [case.value, *items[1:]]))
    return out


def _sequence_cases(name: str, value: list | tuple) -> list[Case]:
    items = list(value)
    cases = [Case(name, "empty list", []), Case(name, "text instead of a list", "text"),
             Case(name, "a number instead of a list", 5), Case(name, "None", None)]
    if items and all(not isinstance(i, (list, tuple, dict)) for i in items):
        cases += _item_cases(name, items)
    if len(items) == 2 and _texts(items):  # a pair of texts: a single one is not a pair
        cases.append(Case(name, "one item instead of a pair", items[:1]))
    return cases


def _dict_cases(name: str, value: dict) -> list[Case]:
    cases = [Case(name, "empty dict", {}), Case(name, "a list instead of a dict", list(value)),
             Case(name, "None", None)]
    key, first = next(iter(value.items()))
    cases.append(Case(name, "empty key", {"": first, **{k: v for k, v in value.items() if k != key}}))
    if _texts(first):
        cases.append(Case(name, "a key with no texts", {**value, key: []}))
        cases.append(Case(name, "a key with an empty text", {**value, key: ["", *first[1:]]}))
        cases.append(Case(name, "a key with a too-long text", {**value, key: [TOO_LONG, *first[1:]]}))
        if _is_word(key) and all(_occurs(key, t) for t in first):
            cases.append(Case(name, f"a text without its key {key!r}",
                              {**value, key: [NO_MATCH_SENTENCE, *first[1:]]}))
    return cases


def _relation_cases(defaults: dict[str, Any]) -> list[Case]:
    """Words that occur in their sentence(s) in the defaults: break the relation."""
    cases: list[Case] = []
    words = {n: v for n, v in defaults.items() if _is_word(v)}
    sentences = {n: v for n, v in defaults.items() if _is_sentence(v)}
    sentence_lists = {n: t for n, v in defaults.items() if (t := _texts(v)) and all(map(_is_sentence, t))}
    word_lists = {n: t for n, v in defaults.items() if (t := _texts(v)) and all(map(_is_word, t))}
    for w, word in words.items():
        for s, sentence in sentences.items():
            if _occurs(word, sentence):
                cases.append(Case(w, f"a word not in {s}", NO_MATCH_WORD, (w, s)))
                cases.append(Case(s, f"a sentence without {w} ({word!r})", NO_MATCH_SENTENCE, (w, s)))
        for s, texts in sentence_lists.items():
            if all(_occurs(word, t) for t in texts):
                cases.append(Case(w, f"a word not in {s}", NO_MATCH_WORD, (w, s)))
                cases.append(Case(s, f"{s}[0] without {w} ({word!r})",
                                  [NO_MATCH_SENTENCE, *texts[1:]], (w, s)))
    for w, wl in word_lists.items():
        for s, texts in sentence_lists.items():
            if len(wl) == len(texts) and all(_occurs(a, b) for a, b in zip(wl, texts, strict=True)):
                cases.append(Case(w, f"{w}[0] not in {s}[0]", [NO_MATCH_WORD, *wl[1:]], (w, s)))
                cases.append(Case(w, f"{w} shorter than {s}", wl[:-1], (w, s)))
                cases.append(Case(s, f"{s} shorter than {w}", texts[:-1], (w, s)))
            elif all(all(_occurs(a, b) for a in wl) for b in texts):
                cases.append(Case(w, f"{w}[0] not in {s}", [NO_MATCH_WORD, *wl[1:]], (w, s)))
        for s, sentence in sentences.items():
            if all(_occurs(a, sentence) for a in wl):
                cases.append(Case(w, f"{w}[0] not in {s}", [NO_MATCH_WORD, *wl[1:]], (w, s)))
    return cases


def bad_cases(notebook: Notebook) -> list[Case]:
    """Every bad value tried for this notebook (minus the ALLOWED ones)."""
    cases: list[Case] = []
    for name, value in notebook.defaults.items():
        if isinstance(value, dict):
            cases += _dict_cases(name, value)
        elif isinstance(value, (list, tuple)):
            cases += _sequence_cases(name, value)
        else:
            cases += _scalar_cases(name, value)
    cases += _relation_cases(notebook.defaults)
    allowed = {
        (name, label)
        for (prefix, name), labels in ALLOWED.items() if notebook.path.stem.startswith(prefix)
        for label in labels
    }
    return [c for c in cases if (c.name, c.label) not in allowed]


# -- running the parameters cell and the check cell ----------------------------------------


@contextlib.contextmanager
def _fast_tokenizers():
    """Load each tokenizer once for the whole test (check cells load theirs every time)."""
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained
    loaded: dict[str, Any] = {}

    def cached(*args: Any, **kwargs: Any) -> Any:
        key = repr((args, sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = original(*args, **kwargs)
        return loaded[key]

    AutoTokenizer.from_pretrained = cached
    try:
        yield
    finally:
        AutoTokenizer.from_pretrained = original


def run_check_cell(notebook: Notebook, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run the parameters cell, the papermill-style overrides, then the check cell."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(notebook.path.parent)  # papermill runs a notebook in its own folder
    try:
        exec(compile(notebook.parameters, f"{notebook.path.name}:parameters", "exec"), namespace)
        namespace.update(overrides)
        exec(compile(notebook.check or "", f"{notebook.path.name}:check", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 70 else text[:60] + f"… ({len(text)} chars)"


def outcome(notebook: Notebook, case: Case) -> str | None:
    """None when the check refuses ``case`` clearly; else what went wrong, in words."""
    try:
        run_check_cell(notebook, {case.name: case.value})
    except ParameterError as error:
        message = str(error)
        if "\n" in message:
            return f"error is not one line: {message!r}"
        if not any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", message) for n in case.cites()):
            return f"error does not name {' or '.join(case.cites())}: {message}"
        return None
    except Exception as error:  # noqa: BLE001 - any other error is the finding
        return f"raised {type(error).__name__} instead of ParameterError: {str(error)[:120]}"
    return "passes silently"


def findings(notebook: Notebook) -> list[tuple[Case, str]]:
    with _fast_tokenizers():
        results = [(case, outcome(notebook, case)) for case in bad_cases(notebook)]
    return [(case, problem) for case, problem in results if problem]


# -- the tests ----------------------------------------------------------------------------

PATHS = [pytest.param(p, id=p.stem) for p in NOTEBOOK_PATHS]


@pytest.mark.parametrize("path", PATHS)
def test_parameters_cell_is_followed_by_a_check_cell(path):
    notebook = load(path)
    assert notebook.check is not None, (
        f"{path.name}: the code cell after the parameters cell must check every parameter "
        "with course_utils.params"
    )
    printed = [o for o in notebook.check_outputs if o.get("output_type") in ("stream", "error")]
    assert not printed, f"{path.name}: the check cell prints nothing on success"


@pytest.mark.parametrize("path", PATHS)
def test_defaults_pass_the_check(path):
    notebook = load(path)
    if notebook.check is None:
        pytest.fail(f"{path.name}: no check cell")
    with _fast_tokenizers():
        run_check_cell(notebook, {})


@pytest.mark.parametrize("path", PATHS)
def test_every_bad_value_gets_a_clear_error(path):
    notebook = load(path)
    if notebook.check is None:
        pytest.fail(f"{path.name}: no check cell")
    cases = bad_cases(notebook)
    untried = set(notebook.names) - {c.name for c in cases}
    assert not untried, f"{path.name}: no bad value generated for {sorted(untried)}"
    problems = findings(notebook)
    lines = [f"{case.name} = {_show(case.value)} ({case.label}): {problem}" for case, problem in problems]
    assert not problems, f"{path.name}: {len(problems)} of {len(cases)} bad values not refused clearly:\n" + "\n".join(lines)


@pytest.mark.parametrize("path", PATHS)
def test_every_assigned_name_reaches_the_notebook(path):
    """Each name the cell assigns is one papermill sees, and an injected value arrives."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    notebook = load(path)
    assert runner.parameter_names(path) == notebook.names, (
        f"{path.name}: papermill cannot see {sorted(set(notebook.names) - set(runner.parameter_names(path)))} "
        "(one `NAME = value` per line, comments on their own line)"
    )
    # What the runner would pass for each default (JSON on the command line: tuples -> lists).
    passed = {name: runner._parse_value(json.dumps(value)) for name, value in notebook.defaults.items()}
    runner.check_parameters(path, passed)
    nb = parameterize_notebook(load_notebook_node(str(path)), passed, kernel_name="python3",
                               language="python")
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    namespace: dict[str, Any] = {}
    exec(injected.source, namespace)
    assert {n: namespace.get(n, "<missing>") for n in passed} == passed


def _e2e_case(notebook: Notebook) -> Case:
    """One bad value to try end to end: the first plain-type case of the first non-seed name."""
    for name in notebook.names:
        if name == "SEED" or notebook.defaults[name] is None:
            continue
        for case in bad_cases(notebook):
            if case.name == name and case.label in ("empty text", "empty list", "zero", "negative", "empty dict"):
                return case
    return Case("SEED", "negative", -1)


def _task_env() -> dict[str, str]:
    """The environment `task run` gives the runner (Taskfile.yml)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", COURSE_NUM_THREADS="2",
               PYTHONHASHSEED="0", COURSE_FILL_SOLUTIONS="1", COURSE_NETGUARD="1",
               PYTHONPATH=str(REPO / "tools/netguard"), PYDEVD_DISABLE_FILE_VALIDATION="1")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_runner_prints_one_line_and_keeps_the_notebook(path, tmp_path):
    notebook = load(path)
    case = _e2e_case(notebook)
    # Only run the kernel when the check cell refuses this value (else the whole notebook runs).
    with _fast_tokenizers():
        assert outcome(notebook, case) is None, f"{path.name}: {case.name}={case.value!r} is not refused"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    output = tmp_path / path.name
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/run_notebooks.py"), str(path), "-p", case.name,
         json.dumps(case.value), "-o", str(output)],
        capture_output=True, text=True, env=_task_env(), cwd=REPO, timeout=1200,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"{re.escape(path.name)}: {re.escape(case.name)}\S*: expected .+, got .+", lines[0]
    ), result.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not output.exists() and not runner.failed_path(output).exists()


ISSUE_23_TABLE = [  # issue 23's table of what bad values did to notebook 04 before the checks
    ("SENTENCES", ["", "The trophy didn't fit in the suitcase because it was too big."]),
    ("ANTECEDENTS", ["zebra", "trophy"]),
    ("SENTENCES", [" ".join(["word"] * 800) + " it was.", "The trophy didn't fit because it was big."]),
    ("N_KEYS", "sixteen"),
    ("D_K_VALUES", [0, 2]),
]


@pytest.mark.parametrize(("name", "value"), ISSUE_23_TABLE, ids=lambda v: str(v)[:20])
def test_issue_23_table_now_gives_one_clear_line(name, value):
    path = next(p for p in NOTEBOOK_PATHS if p.name.startswith("04_"))
    notebook = load(path)
    with _fast_tokenizers(), pytest.raises(ParameterError) as info:
        run_check_cell(notebook, {name: value})
    assert str(info.value).startswith(name) and "\n" not in str(info.value)


# -- the shared checker itself --------------------------------------------------------------


@pytest.mark.parametrize(("call", "message"), [
    (lambda P: P.integer("N", "3", min=1), r"^N: expected an integer ≥ 1, got '3'$"),
    (lambda P: P.integer("N", True), r"^N: expected an integer, got True \(bool\)$"),
    (lambda P: P.integer("N", 9, min=1, max=8), r"^N: expected an integer from 1 to 8, got 9 \(int\)$"),
    (lambda P: P.seed("SEED", 2**32), r"^SEED: expected an integer from 0 to 4294967295"),
    (lambda P: P.integer("SEED", 10**20, min=0), r"^SEED: expected an integer from 0 to 4294967295"),
    (lambda P: P.number("T", math.nan, min=0), r"^T: expected a finite number ≥ 0, got nan"),
    (lambda P: P.number("T", 0, min=0, min_exclusive=True), r"^T: expected a finite number > 0"),
    (lambda P: P.text("S", "  "), r"^S: expected a non-empty string, got '  '$"),
    (lambda P: P.text("S", "x" * 99, max_chars=10), r"^S: expected a non-empty string of at most 10"),
    (lambda P: P.boolean("F", 1), r"^F: expected True or False, got 1 \(int\)$"),
    (lambda P: P.choice("C", "c", ["a", "b"]), r"^C: expected one of \['a', 'b'\], got 'c'$"),
    (lambda P: P.sequence("L", [], P.text), r"^L: expected a list of at least 1 item, got \[\]"),
    (lambda P: P.sequence("L", ["a", ""], P.text), r"^L\[1\]: expected a non-empty string"),
    (lambda P: P.sequence("L", [1, 1], unique=True), r"^L: expected a list without repeated items"),
    (lambda P: P.sequence("L", [2, 1], P.integer, increasing=True), r"^L: expected a strictly increasing"),
    (lambda P: P.sequence("L", "ab"), r"^L: expected a list"),
    (lambda P: P.model_name("M", ""), r"^M: expected None \(the bundled model\)"),
    (lambda P: P.word_in("W", "zebra", "S", "The cat sat."), r"^W: expected a word that occurs in S"),
    (lambda P: P.word_in("W", "cat", "S", "The category."), r"^W: expected a word that occurs in S"),
    (lambda P: P.same_length(A=[1], B=[1, 2]), r"^A and B: expected lists of equal length"),
    (lambda P: P.mapping("D", {"k": []}, P.text, P.sequence), r"^D\['k'\]: expected a list"),
    (lambda P: P.text("S", 5), r"^S: expected a non-empty string, got 5 \(int\)$"),
    (lambda P: P.choice("C", "a\nb", ["x"]), r"^C: expected one of \['x'\], got 'a\\nb'$"),  # one line
])
def test_each_checker_refuses_with_one_line_naming_the_parameter(call, message):
    import course_utils.params as P

    with pytest.raises(P.ParameterError, match=message) as info:
        call(P)
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)


def test_checkers_return_what_they_accept():
    import course_utils.params as P

    assert P.number("X", 2) == 2.0 and isinstance(P.number("X", 2), float)
    assert P.sequence("L", ("a", "b"), P.text) == ["a", "b"]
    assert P.optional(P.text)("S", None) is None and P.optional(P.text)("S", "x") == "x"
    assert P.word_in("W", "Cat", "S", "the cat sat") == "Cat"
    assert P.mapping("D", {"k": ["a"]}, P.text, P.sequence, item=P.text) == {"k": ["a"]}
    assert P.seed("SEED", P.MAX_SEED) == P.MAX_SEED


def test_fits_tokens_counts_with_the_given_tokenizer():
    import course_utils.params as P

    class Words:  # a stand-in tokenizer: one token per word, plus two specials
        model_max_length = 5

        def __call__(self, text):
            return {"input_ids": [0, *range(len(text.split())), 1]}

    assert P.fits_tokens("S", "a b c", Words()) == 5
    with pytest.raises(P.ParameterError, match=r"^S: expected a text of at most 5 tokens"):
        P.fits_tokens("S", "a b c d", Words())
    assert P.fits_tokens("S", "a b c d", Words(), max_tokens=10) == 6


def test_fits_tokens_reads_the_limit_beside_a_tokenizer_without_one(tmp_path):
    import course_utils.params as P

    (tmp_path / "config.json").write_text('{"max_position_embeddings": 4}')

    class Unlimited:  # like SmolLM2's tokenizer: model_max_length is a huge placeholder
        model_max_length = int(1e30)
        name_or_path = str(tmp_path)

        def __call__(self, text):
            return {"input_ids": text.split()}

    assert P.fits_tokens("S", "a b c d", Unlimited()) == 4
    with pytest.raises(P.ParameterError, match=r"at most 4 tokens"):
        P.fits_tokens("S", "a b c d e", Unlimited())


def main() -> int:
    """Print per notebook: bad values tried, and those not refused clearly."""
    total = 0
    start = time.perf_counter()
    for path in NOTEBOOK_PATHS:
        notebook = load(path)
        cases = bad_cases(notebook)
        total += len(cases)
        if notebook.check is None:
            print(f"{path.name}: {len(cases)} bad values; NO CHECK CELL")
            continue
        problems = findings(notebook)
        print(f"{path.name}: {len(cases)} bad values, {len(problems)} not refused clearly")
        for case, problem in problems:
            print(f"    {case.name} = {_show(case.value)} ({case.label}): {problem}")
    print(f"{total} bad values in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
