"""Used in notebooks 00–14: checking a notebook's parameters, one clear error for every bad value.

Used in notebooks 00–12 (the cell right after each ``parameters`` cell) and by
``tools/run_notebooks.py`` (which prints a :class:`ParameterError` as one line).

Instructors change parameters with ``task run -- NB -p NAME VALUE``. A bad value must fail
*before* any model runs, with one message that names the parameter, the value given and
what is allowed — never a deep torch traceback, never a silent ``nan``. Each checker below
validates one value and returns it (normalised: a tuple becomes a list, an int a float
where a number is asked for), so a check cell reads as a list of declarations::

    from course_utils import params as P
    SEED = P.seed("SEED", SEED)
    N_KEYS = P.integer("N_KEYS", N_KEYS, min=1, max=4096)
    SENTENCES = P.sequence("SENTENCES", SENTENCES, P.text, min_len=1)
    P.word_in("ANTECEDENTS[0]", ANTECEDENTS[0], "SENTENCES[0]", SENTENCES[0])
    AMBIGUOUS = P.mapping("AMBIGUOUS", AMBIGUOUS, P.text, P.sequence, item=P.text)

``tests/test_parameters.py`` tries ~50–170 bad values per notebook against the parameters
cell plus this check cell only, and fails for any that passes silently.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "ParameterError", "integer", "number", "text", "boolean", "choice", "optional",
    "sequence", "model_name", "word_in", "same_length", "fits_tokens", "positive_int",
    "seed", "mapping", "MAX_SEED",
]

MAX_SEED = 2**32 - 1
"""The largest seed every generator accepts (NumPy's legacy seeding stops at 2**32 - 1)."""


class ParameterError(ValueError):
    """A notebook parameter (or a function argument) has a value that is not allowed.

    The message is one line: ``NAME: expected …, got …``.
    """

    def __init__(self, name: str, expected: str, value: Any) -> None:
        self.name, self.expected, self.value = name, expected, value
        message = f"{name}: expected {expected}, got {_show(value)}"
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))  # one line


def _show(value: Any, limit: int = 60) -> str:
    """A short, one-line rendering of ``value`` for an error message."""
    text = repr(value)
    if isinstance(value, str) and len(value) > limit:
        text = repr(value[:limit]) + f"… ({len(value)} characters)"
    elif len(text) > limit:
        text = text[:limit] + "…"
    text = text.replace("\n", "\\n")
    return f"{text} ({type(value).__name__})" if not isinstance(value, str) else text


def _range_text(kind: str, min: float | None, max: float | None) -> str:
    if min is not None and max is not None:
        return f"{kind} from {min} to {max}"
    if min is not None:
        return f"{kind} ≥ {min}"
    if max is not None:
        return f"{kind} ≤ {max}"
    return kind


def integer(name: str, value: Any, *, min: int | None = None, max: int | None = None) -> int:
    """An ``int`` (not a bool, not a float) within ``[min, max]``.

    A parameter named ``SEED`` is a seed: without an explicit ``max`` it is capped at
    :data:`MAX_SEED` (a larger one fails deep inside ``torch.manual_seed``); see :func:`seed`.
    """
    if name == "SEED" and max is None:
        max = MAX_SEED
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(name, _range_text("an integer", min, max), value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise ParameterError(name, _range_text("an integer", min, max), value)
    return value


def seed(name: str, value: Any) -> int:
    """A random seed: an ``int`` from 0 to :data:`MAX_SEED` (torch, NumPy and ``random`` all
    accept it; a larger one fails deep inside ``torch.manual_seed``)."""
    return integer(name, value, min=0, max=MAX_SEED)


def positive_int(name: str, value: Any) -> int:
    """An ``int`` ≥ 1 (the check written most often: sizes, counts, steps)."""
    return integer(name, value, min=1)


def number(
    name: str, value: Any, *, min: float | None = None, max: float | None = None,
    min_exclusive: bool = False,
) -> float:
    """A finite real number (int or float, not a bool, never nan/inf) within range.

    ``min_exclusive=True`` makes ``min`` itself invalid (e.g. a temperature > 0).
    """
    kind = "a finite number"
    if min is not None and min_exclusive:
        expected = f"{kind} > {min}" + (f" and ≤ {max}" if max is not None else "")
    else:
        expected = _range_text(kind, min, max)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, expected, value)
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(name, expected, value)
    if min is not None and (value < min or (min_exclusive and value == min)):
        raise ParameterError(name, expected, value)
    if max is not None and value > max:
        raise ParameterError(name, expected, value)
    return value


def text(name: str, value: Any, *, max_chars: int | None = None, allow_empty: bool = False) -> str:
    """A string with at least one non-space character (unless ``allow_empty``)."""
    expected = "a non-empty string" if not allow_empty else "a string"
    if max_chars is not None:
        expected += f" of at most {max_chars} characters"
    if not isinstance(value, str):
        raise ParameterError(name, expected, value)
    if not allow_empty and not value.strip():
        raise ParameterError(name, expected, value)
    if max_chars is not None and len(value) > max_chars:
        raise ParameterError(name, expected, value)
    return value


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False`` (not 0/1, not "yes")."""
    if not isinstance(value, bool):
        raise ParameterError(name, "True or False", value)
    return value


def choice(name: str, value: Any, options: Sequence[Any]) -> Any:
    """One of ``options``."""
    if isinstance(value, bool) and not any(isinstance(o, bool) for o in options):
        raise ParameterError(name, f"one of {list(options)}", value)
    try:
        ok = value in options
    except TypeError:
        ok = False
    if not ok:
        raise ParameterError(name, f"one of {list(options)}", value)
    return value


def optional(check: Callable[..., T]) -> Callable[..., T | None]:
    """Wrap a checker so that ``None`` is also accepted: ``optional(P.text)("NAME", v)``."""

    def checked(name: str, value: Any, **kwargs: Any) -> T | None:
        return None if value is None else check(name, value, **kwargs)

    return checked


def sequence(
    name: str, value: Any, item: Callable[..., T] | None = None, *,
    min_len: int = 1, max_len: int | None = None, length: int | None = None,
    unique: bool = False, increasing: bool = False, **item_kwargs: Any,
) -> list[T]:
    """A list or tuple whose items each pass ``item(f"{name}[i]", x, **item_kwargs)``.

    Returns a list. ``length`` fixes the number of items; ``unique`` / ``increasing``
    check the items' order.
    """
    if length is not None:
        expected = f"a list of {length} items"
    elif max_len is not None:
        expected = f"a list of {min_len} to {max_len} items"
    else:
        expected = f"a list of at least {min_len} item{'s' if min_len != 1 else ''}"
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
        raise ParameterError(name, expected, value)
    if (length is not None and len(value) != length) or len(value) < min_len or (
        max_len is not None and len(value) > max_len
    ):
        raise ParameterError(name, expected, value)
    out = [item(f"{name}[{i}]", x, **item_kwargs) if item else x for i, x in enumerate(value)]
    if unique and len(set(map(repr, out))) != len(out):
        raise ParameterError(name, "a list without repeated items", value)
    if increasing and any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ParameterError(name, "a strictly increasing list", value)
    return out


def model_name(name: str, value: Any) -> str | None:
    """``None`` (the bundled model) or a non-empty hub id / local directory."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ParameterError(name, "None (the bundled model) or a hub id / local directory", value)
    return value


def word_in(name: str, word: Any, sentence_name: str, sentence: str) -> str:
    """``word`` occurs in ``sentence`` as a whole word (case-insensitive)."""
    text(name, word)
    text(sentence_name, sentence)
    if not re.search(rf"(?<!\w){re.escape(word.strip())}(?!\w)", sentence, flags=re.IGNORECASE):
        raise ParameterError(name, f"a word that occurs in {sentence_name} ({_show(sentence)})", word)
    return word


def mapping(
    name: str, value: Any, keys: Callable[..., Any] | None = None,
    values: Callable[..., Any] | None = None, *, min_len: int = 1, max_len: int | None = None,
    **value_kwargs: Any,
) -> dict[Any, Any]:
    """A dict of ``min_len``..``max_len`` entries; each key passes ``keys(f"{name} key …", k)``
    and each value ``values(f"{name}[k]", v, **value_kwargs)``. Returns a new dict.

    ``P.mapping("AMBIGUOUS", AMBIGUOUS, P.text, P.sequence, item=P.text)``: words, each with
    a non-empty list of non-empty texts.
    """
    if max_len is not None:
        expected = f"a dict of {min_len} to {max_len} entries"
    else:
        expected = f"a dict of at least {min_len} entr{'ies' if min_len != 1 else 'y'}"
    if not isinstance(value, dict) or len(value) < min_len or (
        max_len is not None and len(value) > max_len
    ):
        raise ParameterError(name, expected, value)
    out = {}
    for k, v in value.items():
        k = keys(f"{name} key {k!r}", k) if keys else k
        out[k] = values(f"{name}[{k!r}]", v, **value_kwargs) if values else v
    return out


def same_length(**lists: Sequence[Any]) -> int:
    """All the given lists have the same length; returns it."""
    lengths = {name: len(v) for name, v in lists.items()}
    if len(set(lengths.values())) > 1:
        names = " and ".join(lengths)
        raise ParameterError(names, "lists of equal length", lengths)
    return next(iter(lengths.values()), 0)


def _model_positions(tokenizer: Any) -> int | None:
    """The model's maximum positions: the tokenizer's ``model_max_length`` when it is a real
    limit, else ``max_position_embeddings`` (or ``n_positions``) from the ``config.json``
    beside a tokenizer loaded from a local directory (SmolLM2's tokenizer sets no limit)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 1_000_000:
        return limit
    folder = getattr(tokenizer, "name_or_path", None)
    if not folder:
        return None
    config = Path(folder) / "config.json"
    try:
        values = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        if isinstance(values.get(key), int) and values[key] > 0:
            return values[key]
    return None


def fits_tokens(name: str, value: str, tokenizer: Any, max_tokens: int | None = None) -> int:
    """``value`` tokenises (special tokens included) to at most ``max_tokens`` tokens.

    ``max_tokens`` defaults to the model's maximum positions: the tokenizer's
    ``model_max_length`` when that is a real limit, else the ``config.json`` beside a
    tokenizer loaded from a directory. Returns the token count.
    """
    text(name, value, allow_empty=True)  # a str (emptiness is the caller's choice)
    if max_tokens is None:
        max_tokens = _model_positions(tokenizer)
    count = len(tokenizer(value)["input_ids"])
    if max_tokens is not None and count > max_tokens:
        raise ParameterError(name, f"a text of at most {max_tokens} tokens for this model", f"{count} tokens: {value[:40]}…")
    return count
