"""Used in notebook 01: byte-level BPE from scratch, real tokenizers rebuilt from their files.

Byte-level BPE (the GPT-2 / Llama 3 / SmolLM2 family) starts from the 256 possible bytes, so
*every* string can be encoded and nothing is ever "unknown". Training repeats one step:
count adjacent token pairs, merge the most frequent pair into a new token. Encoding
replays the learned merges, earliest-learned pair first.

- ``PreTokenizer`` / ``pretokenize``: split text into chunks ("words" with their leading
  space) that merges never cross. The default is exactly GPT-2's pattern (``GPT2_PATTERN``);
  ``LLAMA3_PATTERN`` (GPT-4's cl100k, Llama 3) and ``SMOLLM2_PRETOKENIZER`` (every digit
  its own chunk, then GPT-2's pattern) show the other digit conventions.
- ``count_pairs`` / ``merge_pair``: the two building blocks of the merge loop.
- ``train_bpe``: the merge loop with *incremental* pair counts (only the chunks that contain
  the merged pair are re-counted), so ~4,000 merges on 100 KB take well under a second in
  pure Python. (The textbook loop it is tested against lives in the tests.)
- ``BPETokenizer``: ``encode`` / ``decode`` that round-trip any Python string exactly.
  ``BPETokenizer(merges)`` is our own layout (ids 0-255 = bytes, ``256 + k`` = merge ``k``);
  ``BPETokenizer.from_tokenizer_json`` / ``from_byte_level_bpe`` load a real byte-level BPE
  (SmolLM2's ``tokenizer.json``, GPT-2's ``encoder.json`` + ``vocab.bpe``) into the same code.
- ``count_tokens`` / ``truncate_to_max_tokens``: token budgets for the pretrained tokenizers
  and ours, with a clear error for empty input and a warning when text is cut.
"""

from __future__ import annotations

import heapq
import json
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from itertools import pairwise
from pathlib import Path

import regex

Pair = tuple[int, int]

NUM_BYTES = 256

# GPT-2's pre-tokenizer, character for character as in OpenAI's gpt-2 `src/encoder.py` (and
# the `tokenizers` library's ByteLevel(use_regex=True)): an optional space then letters
# (\p{L}), or an optional space then a whole run of digits (\p{N}+), or an optional space
# then other symbols; then whitespace runs (a run followed by a word leaves its last space
# to that word). It needs the `regex` module: Python's `re` has no \p{L} / \p{N}.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# GPT-4's cl100k_base pattern (tiktoken), reused by Llama 3: case-insensitive contractions,
# a letter run may take one leading non-letter, and digits come in groups of at most three
# with no leading space (`\p{N}{1,3}`), so "12345" -> "123", "45".
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_DIGIT = regex.compile(r"(\p{N})")  # the capture group keeps the digits in split()


@cache
def _compiled(pattern: str) -> regex.Pattern:
    return regex.compile(pattern)


UNICODE_FORMS = (None, "NFC", "NFD", "NFKC", "NFKD")


@dataclass(frozen=True)
class PreTokenizer:
    """Cuts text into chunks with ``pattern``; ``split_digits`` first isolates every digit.

    ``split_digits=True`` is the `tokenizers` library's ``Digits(individual_digits=True)``
    step that SmolLM2's (and StarCoder's) tokenizer runs before GPT-2's pattern. Text the
    pattern does not match is kept as its own chunk, so ``"".join(chunks) == text`` always
    (the normalised text, when ``normalize`` names a Unicode form: Qwen2's tokenizer
    applies ``"NFC"`` first, so "e" + a combining accent becomes one "é").
    """

    pattern: str = GPT2_PATTERN
    split_digits: bool = False
    name: str = "GPT-2"
    normalize: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"pattern must be a non-empty regular expression str, got {self.pattern!r}")
        try:
            _compiled(self.pattern)
        except regex.error as error:
            raise ValueError(f"pattern is not a valid regular expression: {error}") from None
        if not isinstance(self.split_digits, bool):
            raise ValueError(f"split_digits must be True or False, got {self.split_digits!r}")
        if self.normalize not in UNICODE_FORMS:
            raise ValueError(f"normalize must be one of {UNICODE_FORMS}, got {self.normalize!r}")

    def normalized(self, text: str) -> str:
        """``text`` in the Unicode form the tokenizer applies first (itself when none)."""
        return text if self.normalize is None else unicodedata.normalize(self.normalize, text)

    def __call__(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        text = self.normalized(text)
        # Digits(individual_digits=True): each digit becomes a piece of its own.
        pieces = [p for p in _DIGIT.split(text) if p] if self.split_digits else [text]
        compiled = _compiled(self.pattern)
        chunks: list[str] = []
        for piece in pieces:
            end = 0
            for match in compiled.finditer(piece):
                if match.start() > end:  # text the pattern skipped stays a chunk of its own
                    chunks.append(piece[end : match.start()])
                if match.end() > match.start():
                    chunks.append(match.group())
                end = match.end()
            if end < len(piece):
                chunks.append(piece[end:])
        return chunks


GPT2_PRETOKENIZER = PreTokenizer(GPT2_PATTERN, name="GPT-2")
LLAMA3_PRETOKENIZER = PreTokenizer(LLAMA3_PATTERN, name="GPT-4 / Llama 3")
SMOLLM2_PRETOKENIZER = PreTokenizer(GPT2_PATTERN, split_digits=True, name="SmolLM2")

DIGIT_CONVENTIONS: dict[str, PreTokenizer] = {
    "GPT-2: ' ?\\p{N}+' (whole digit run, with its space)": GPT2_PRETOKENIZER,
    "GPT-4 / Llama 3: '\\p{N}{1,3}' (groups of three)": LLAMA3_PRETOKENIZER,
    "SmolLM2: every digit alone, then GPT-2's pattern": SMOLLM2_PRETOKENIZER,
}
"""The three digit conventions, by the models that use them (notebook 01 shows them)."""


def pretokenize(text: str, pretokenizer: PreTokenizer = GPT2_PRETOKENIZER) -> list[str]:
    """Split ``text`` into chunks ("words" with their leading space); joins back to ``text``
    (to ``pretokenizer.normalized(text)`` for a pre-tokenizer that normalises, e.g. NFC).

    The default is exactly GPT-2's pre-tokenizer (``GPT2_PATTERN``).
    """
    if not isinstance(pretokenizer, PreTokenizer):
        raise ValueError(f"pretokenizer must be a PreTokenizer, got {type(pretokenizer).__name__}")
    return pretokenizer(text)


def to_bytes(text: str) -> bytes:
    """UTF-8 bytes of ``text``; lone surrogates (legal in Python strings) pass through."""
    return text.encode("utf-8", errors="surrogatepass")


def printable_bytes() -> dict[int, str]:
    """GPT-2's byte -> printable character table (why a space shows up as ``Ġ``).

    Printable Latin-1 bytes map to themselves; the other 68 (controls, space, ...) are
    shifted to U+0100 onwards in order, so ``0x20`` (space) -> ``Ġ`` and ``0x0A`` -> ``Ċ``.
    Byte-level BPE vocabularies (GPT-2, Llama 3, SmolLM2) store tokens in this alphabet.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    table = {byte: chr(byte) for byte in keep}
    shifted = 0
    for byte in range(NUM_BYTES):
        if byte not in table:
            table[byte] = chr(NUM_BYTES + shifted)
            shifted += 1
    return dict(sorted(table.items()))


def count_pairs(ids: Sequence[int], counts: dict[Pair, int] | None = None, weight: int = 1) -> dict[Pair, int]:
    """Count adjacent pairs: ``[1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}``.

    Pairs overlap (``[5, 5, 5]`` has the pair ``(5, 5)`` twice). Adds ``weight`` per
    occurrence into ``counts`` when given (a word seen ``weight`` times in the corpus).
    """
    counts = {} if counts is None else counts
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each non-overlapping occurrence of ``pair`` (left to right) by ``new_id``.

    ``merge_pair([5, 5, 5], (5, 5), 9) -> [9, 5]``: after a merge the scan skips both
    members, exactly as BPE does.
    """
    merged: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_vocab_size(vocab_size: object) -> int:
    if not _is_int(vocab_size) or vocab_size < NUM_BYTES:
        raise ValueError(
            f"vocab_size must be an int >= {NUM_BYTES} (the byte alphabet), got {vocab_size!r}"
        )
    return vocab_size


def _word_counts(text: str, pretokenizer: PreTokenizer = GPT2_PRETOKENIZER) -> Counter[bytes]:
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty str (the training text), got {text!r:.40}")
    return Counter(to_bytes(chunk) for chunk in pretokenize(text, pretokenizer))


def _check_merges(merges: object) -> list[Pair]:
    if isinstance(merges, (str, bytes, Mapping)) or not isinstance(merges, Sequence):
        raise ValueError(
            f"merges must be a list of (left_id, right_id) int pairs, got {type(merges).__name__}"
        )
    checked = []
    for rank, pair in enumerate(merges):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(map(_is_int, pair)):
            raise ValueError(f"merges[{rank}] must be a (left_id, right_id) pair of ints, got {pair!r}")
        checked.append((pair[0], pair[1]))
    return checked


class BPETokenizer:
    """A byte-level BPE tokenizer: chunks of text -> bytes -> token ids by replaying merges.

    ``BPETokenizer(merges)`` is the layout ``train_bpe`` learns: ids 0-255 are the bytes and
    ``merges[k] = (left, right)`` makes the token ``256 + k`` (``left`` followed by
    ``right``). Keeping only the first ``m`` merges gives exactly the tokenizer that training
    to ``vocab_size = 256 + m`` would have produced (see ``truncated``).

    A real tokenizer numbers its tokens its own way: pass ``vocab`` (id -> bytes of every
    token; a merge then makes the id whose bytes are ``vocab[left] + vocab[right]``), its
    ``pretokenizer`` and its ``special_tokens`` (text -> id; decoded, never produced by
    ``encode``: text that spells ``<|im_end|>`` is encoded as ordinary text). Use
    ``from_tokenizer_json`` or ``from_byte_level_bpe`` rather than building these by hand.

    Encoding one chunk: start from its bytes, then repeatedly merge the adjacent pair that
    was learned earliest (lowest rank), everywhere it occurs, until no learned pair is left,
    exactly as GPT-2's ``encoder.py`` does. Results are cached per chunk.
    """

    def __init__(
        self,
        merges: Sequence[Pair] = (),
        *,
        vocab: Mapping[int, bytes] | None = None,
        pretokenizer: PreTokenizer = GPT2_PRETOKENIZER,
        special_tokens: Mapping[str, int] | None = None,
        ignore_merges: bool = False,
    ) -> None:
        self.merges: list[Pair] = _check_merges(merges)
        if not isinstance(pretokenizer, PreTokenizer):
            raise ValueError(
                f"pretokenizer must be a PreTokenizer, got {type(pretokenizer).__name__}"
            )
        if not isinstance(ignore_merges, bool):
            raise ValueError(f"ignore_merges must be True or False, got {ignore_merges!r}")
        self.pretokenizer = pretokenizer
        self.ignore_merges = ignore_merges
        self._own_layout = vocab is None
        if vocab is None:
            self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(NUM_BYTES)}
        else:
            if not isinstance(vocab, Mapping) or not all(
                _is_int(i) and i >= 0 and isinstance(b, bytes) and b for i, b in vocab.items()
            ):
                raise ValueError("vocab must map each token id (int >= 0) to its non-empty bytes")
            self.vocab = dict(vocab)
        by_bytes = {token: i for i, token in self.vocab.items()}
        if vocab is not None and len(by_bytes) != len(self.vocab):
            raise ValueError("vocab has two ids with the same bytes: the encoding would be ambiguous")
        # (left, right) -> (rank, id of the merged token)
        self._merge_of: dict[Pair, tuple[int, int]] = {}
        for rank, (left, right) in enumerate(self.merges):
            if left not in self.vocab or right not in self.vocab:
                raise ValueError(f"merge {rank} = {(left, right)} uses ids not defined before it")
            merged = self.vocab[left] + self.vocab[right]
            if vocab is None:
                new_id = NUM_BYTES + rank
                self.vocab[new_id] = merged
            elif merged in by_bytes:
                new_id = by_bytes[merged]
            else:
                raise ValueError(f"merge {rank} = {(left, right)} makes {merged!r}, which vocab lacks")
            self._merge_of.setdefault((left, right), (rank, new_id))
        self.ranks: dict[Pair, int] = {pair: rank for pair, (rank, _) in self._merge_of.items()}
        self._byte_ids = [by_bytes.get(bytes([b])) for b in range(NUM_BYTES)]
        self._whole = by_bytes if ignore_merges else {}
        specials = dict(special_tokens or {})
        if not all(isinstance(t, str) and t and _is_int(i) for t, i in specials.items()):
            raise ValueError("special_tokens must map non-empty strings to int ids")
        if clash := sorted(set(specials.values()) & set(self.vocab)):
            raise ValueError(f"special token ids {clash[:3]} are also ordinary token ids")
        self.special_tokens = specials
        self._special_ids = {i: t for t, i in specials.items()}
        self._cache: dict[str, list[int]] = {}

    def __repr__(self) -> str:  # the merges list is long: don't print it
        return f"BPETokenizer(vocab_size={self.vocab_size}, pretokenizer={self.pretokenizer.name!r})"

    @property
    def vocab_size(self) -> int:
        """Number of ids: byte tokens, merged tokens and special tokens."""
        return len(self.vocab) + len(self.special_tokens)

    # --- real tokenizers ------------------------------------------------------------------

    @classmethod
    def from_byte_level_bpe(
        cls,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str] | str],
        pretokenizer: PreTokenizer = GPT2_PRETOKENIZER,
        special_tokens: Mapping[str, int] | None = None,
        ignore_merges: bool = False,
    ) -> BPETokenizer:
        """A real byte-level BPE from its token strings (GPT-2's printable-byte alphabet).

        ``vocab`` maps each token string (``"Ġthe"``) to its id, as in GPT-2's
        ``encoder.json`` or a ``tokenizer.json``; ``merges`` lists pairs of token strings in
        rank order (``("Ġ", "t")`` or the older ``"Ġ t"``). Entries of ``vocab`` that are
        ``special_tokens`` are kept apart.
        """
        if not isinstance(vocab, Mapping) or not vocab:
            raise ValueError(f"vocab must be a non-empty dict token -> id, got {type(vocab).__name__}")
        specials = dict(special_tokens or {})
        to_byte = {char: byte for byte, char in printable_bytes().items()}
        id_bytes: dict[int, bytes] = {}
        for token, index in vocab.items():
            if token in specials:
                continue
            try:
                id_bytes[index] = bytes(to_byte[char] for char in token)
            except (KeyError, TypeError):
                raise ValueError(
                    f"vocab token {token!r} is not written in the printable-byte alphabet: "
                    "is this a byte-level BPE? (pass it in special_tokens if it is special)"
                ) from None
        pairs: list[Pair] = []
        for rank, merge in enumerate(merges):
            left, right = merge.split(" ") if isinstance(merge, str) else merge
            if left not in vocab or right not in vocab:
                raise ValueError(f"merges[{rank}] = {merge!r} uses a token that vocab lacks")
            pairs.append((vocab[left], vocab[right]))
        return cls(pairs, vocab=id_bytes, pretokenizer=pretokenizer, special_tokens=specials,
                   ignore_merges=ignore_merges)

    @classmethod
    def from_tokenizer_json(cls, path: str | Path | Mapping) -> BPETokenizer:
        """The tokenizer a Hugging Face ``tokenizer.json`` describes, rebuilt on this class.

        ``path`` is the file, or its parsed content (for a loaded fast tokenizer:
        ``json.loads(tokenizer.backend_tokenizer.to_str())``).

        Reads the BPE model's vocab and merges, the added tokens (as ``special_tokens``) and
        the pre-tokenizer: ``ByteLevel(use_regex=True)`` is GPT-2's pattern; a ``Digits
        (individual_digits=True)`` step before it sets ``split_digits``; a ``Split`` regex
        before ``ByteLevel(use_regex=False)`` (Llama 3 and Qwen2 style) becomes the pattern;
        a Unicode normalizer (Qwen2's ``NFC``) becomes ``PreTokenizer.normalize``. Anything
        else (other normalizers, byte fallback, dropout, ...) is refused with a ``ValueError``.
        """
        if isinstance(path, Mapping):
            spec, name = path, "tokenizer spec"
        else:
            if not isinstance(path, (str, Path)) or not Path(path).is_file():
                raise ValueError(f"path must be an existing tokenizer.json file, got {path!r}")
            spec, name = json.loads(Path(path).read_text(encoding="utf-8")), Path(path).name
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"{name}: expected a BPE model, got {model.get('type')!r}")
        normalizer = spec.get("normalizer")
        form = normalizer.get("type") if isinstance(normalizer, Mapping) else None
        unsupported = {
            "normalizer": None if form in UNICODE_FORMS[1:] else normalizer,
            "dropout": model.get("dropout"),
            "byte_fallback": model.get("byte_fallback") or None,
            "continuing_subword_prefix": model.get("continuing_subword_prefix") or None,
            "end_of_word_suffix": model.get("end_of_word_suffix") or None,
        }
        if used := {k: v for k, v in unsupported.items() if v is not None}:
            raise ValueError(f"{name}: not a plain byte-level BPE, it sets {used}")
        specials = {token["content"]: token["id"] for token in spec.get("added_tokens", [])}
        pretokenizer = _pretokenizer_from_spec(spec.get("pre_tokenizer"))
        if form in UNICODE_FORMS[1:]:
            pretokenizer = replace(pretokenizer, normalize=form, name=f"{form}, then {pretokenizer.name}")
        return cls.from_byte_level_bpe(
            model["vocab"], model["merges"], pretokenizer,
            special_tokens=specials, ignore_merges=bool(model.get("ignore_merges")),
        )

    # --- encoding and decoding ------------------------------------------------------------

    def truncated(self, vocab_size: int) -> BPETokenizer:
        """The same tokenizer with only its first ``vocab_size - 256`` merges."""
        _check_vocab_size(vocab_size)
        if not self._own_layout:
            raise ValueError("truncated() needs our own id layout (ids 256 + k = merge k)")
        if vocab_size > self.vocab_size:
            raise ValueError(f"vocab_size {vocab_size} exceeds this tokenizer's {self.vocab_size}")
        return BPETokenizer(self.merges[: vocab_size - NUM_BYTES], pretokenizer=self.pretokenizer)

    def _byte_id(self, byte: int, chunk: str) -> int:
        token = self._byte_ids[byte]
        if token is None:
            raise ValueError(
                f"text contains {chunk!r} whose byte {byte:#04x} has no token in this vocabulary "
                "(it never occurred in the tokenizer's training data)"
            )
        return token

    def _encode_chunk(self, chunk: str) -> list[int]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        data = to_bytes(chunk)
        if data in self._whole:  # ignore_merges: a chunk that is a token is taken whole
            return [self._whole[data]]
        ids = [self._byte_id(byte, chunk) for byte in data]
        merge_of = self._merge_of
        while len(ids) >= 2:
            # The pair that was learned earliest is applied first, as in training.
            found = [merge_of[pair] + pair for pair in pairwise(ids) if pair in merge_of]
            if not found:
                break
            _, new_id, left, right = min(found)
            ids = merge_pair(ids, (left, right), new_id)
        if len(self._cache) < 200_000:
            self._cache[chunk] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (any Python string; ``""`` gives ``[]``)."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return [i for chunk in self.pretokenizer(text) for i in self._encode_chunk(chunk)]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The raw bytes of ``ids`` (a token may hold part of a multi-byte character)."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise ValueError(f"ids must be a list of int token ids, got {type(ids).__name__}")
        pieces = []
        for i in ids:
            if not _is_int(i):
                raise ValueError(f"ids must be int token ids, got {i!r} ({type(i).__name__})")
            if i in self.vocab:
                pieces.append(self.vocab[i])
            elif i in self._special_ids:
                pieces.append(self._special_ids[i].encode("utf-8"))
            else:
                raise ValueError(f"id {i} is not in the vocabulary (ids 0..{self.vocab_size - 1})")
        return b"".join(pieces)

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        """Text of ``ids``; ``decode(encode(s)) == s`` for every string ``s``.

        Bytes that are not valid UTF-8 (possible for an arbitrary id sequence, e.g. one cut
        in the middle of a character) are handled with ``errors`` (default: U+FFFD).
        """
        if errors not in ("strict", "replace", "ignore", "backslashreplace"):
            raise ValueError(
                f"errors must be 'strict', 'replace', 'ignore' or 'backslashreplace', got {errors!r}"
            )
        data = self.decode_bytes(ids)
        try:
            return data.decode("utf-8", errors="surrogatepass")
        except UnicodeDecodeError:
            return data.decode("utf-8", errors=errors)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Readable token pieces (invalid UTF-8 fragments shown as their byte escapes)."""
        pieces = []
        for i in ids:
            raw = self.decode_bytes([i])
            try:
                pieces.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                pieces.append(repr(raw)[2:-1])
        return pieces


def _pretokenizer_from_spec(spec: Mapping | None) -> PreTokenizer:
    """The ``PreTokenizer`` for a ``tokenizer.json`` ``pre_tokenizer`` entry (see above)."""
    steps = (spec or {}).get("pretokenizers", [spec]) if (spec or {}).get("type") == "Sequence" else [spec]
    steps = [step for step in steps if step]
    kinds = [step.get("type") for step in steps]
    if not steps or kinds[-1] != "ByteLevel" or steps[-1].get("add_prefix_space"):
        raise ValueError(
            f"pre_tokenizer must end with ByteLevel(add_prefix_space=False), got {kinds or None}"
        )
    byte_level = steps[-1]
    if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
        return PreTokenizer(GPT2_PATTERN, name="GPT-2 (ByteLevel)")
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level.get(
        "use_regex", True
    ):
        return PreTokenizer(GPT2_PATTERN, split_digits=True, name="digits, then GPT-2")
    if (
        kinds == ["Split", "ByteLevel"]
        and not byte_level.get("use_regex", True)
        and "Regex" in steps[0].get("pattern", {})
        and str(steps[0].get("behavior", "")).lower() == "isolated"
        and not steps[0].get("invert")
    ):
        return PreTokenizer(steps[0]["pattern"]["Regex"], name="Split regex")
    raise ValueError(f"unsupported pre_tokenizer steps {kinds}: expected ByteLevel, Digits+ByteLevel "
                     "or Split+ByteLevel")


def train_bpe(
    text: str,
    vocab_size: int,
    on_merge: Callable[[int, Pair, int], None] | None = None,
    pretokenizer: PreTokenizer = GPT2_PRETOKENIZER,
) -> BPETokenizer:
    """Learn ``vocab_size - 256`` merges on ``text`` (stops early if no pair is left).

    Incremental counting: the corpus is kept as unique chunks with their frequencies;
    ``pair_counts`` holds every adjacent pair's total count and ``where[pair]`` the chunks
    that contain it. A merge only re-counts those chunks, and a heap with lazy deletion finds
    the most frequent pair; ties go to the smallest pair, so training is deterministic. Same
    result as the textbook loop that recounts everything (a test checks it).

    ``on_merge(rank, pair, count)`` is called after each merge (e.g. to print progress).
    """
    _check_vocab_size(vocab_size)
    if on_merge is not None and not callable(on_merge):
        raise ValueError(f"on_merge must be a function (rank, pair, count) or None, got {on_merge!r}")
    word_counts = _word_counts(text, pretokenizer)
    words: list[list[int]] = [list(word) for word in word_counts]
    freqs: list[int] = list(word_counts.values())

    pair_counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for index, (ids, freq) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(ids):
            pair_counts[pair] += freq
            where[pair].add(index)
    # Heap entries (-count, pair); an entry is stale when its count is no longer current.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    while len(merges) < vocab_size - NUM_BYTES and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count or negative_count == 0:
            continue  # stale entry
        new_id = NUM_BYTES + len(merges)
        merges.append(pair)
        changed: set[Pair] = set()
        for index in where.pop(pair):
            ids, freq = words[index], freqs[index]
            for old in pairwise(ids):  # forget this chunk's old pairs ...
                pair_counts[old] -= freq
                changed.add(old)
            ids = words[index] = merge_pair(ids, pair, new_id)
            for new in pairwise(ids):  # ... and count its new ones
                pair_counts[new] += freq
                where[new].add(index)
                changed.add(new)
        # `where` may keep chunks that lost a pair: harmless, merge_pair then finds nothing.
        for changed_pair in changed:
            count = pair_counts[changed_pair]
            if count > 0:
                heapq.heappush(heap, (-count, changed_pair))
            else:
                del pair_counts[changed_pair]
        if on_merge is not None:
            on_merge(len(merges) - 1, pair, -negative_count)
    return BPETokenizer(merges, pretokenizer=pretokenizer)


# --- a varied test text, offline ----------------------------------------------------------

VARIED_LINES = [
    "Le cœur a ses raisons que la raison ne connaît point ; c'est l'été à Noël, garçon !",
    "Über den Wolken muß die Freiheit wohl grenzenlos sein – Straße, Grüße, Äpfel.",
    "¿Dónde está la biblioteca? ¡Mañana, señor! Año 1492, pingüino y acción.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Москва, 2024 год.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία· αλφάβητο, λόγος, Ελλάδα.",
    "نص عربي قصير: السلام عليكم، الرقم ٣٤٥ والسنة ٢٠٢٤.",
    "עברית: שלום עולם, מה שלומך היום? 42 תפוחים.",
    "हिन्दी पाठ: नमस्ते दुनिया, आज का दिन सुंदर है। संख्या १२३४।",
    "東京は日本の首都です。人口は約1400万人、面積は2194平方キロメートル。",
    "自然语言处理很有趣！我们在2024年学习了分词器和注意力机制。",
    "한국어 문장: 안녕하세요, 세계! 토큰화는 재미있습니다. 서울 2024년.",
    "ภาษาไทย: สวัสดีชาวโลก การแบ่งคำเป็นเรื่องยาก",
    "Tiếng Việt: Xin chào thế giới, tôi đang học mô hình ngôn ngữ.",
    "Türkçe: Çalışkan öğrenciler ığdır'da şöyle düşünür. Polski: zażółć gęślą jaźń.",
    "Emoji: I 💜 NLP 🤗 👍🏽 👩🏽‍💻 🇫🇷🇯🇵 🏳️‍🌈 ❤️‍🔥 🧑‍🤝‍🧑 ✨🎉🚀",
    "Math & symbols: ∀x ∈ ℝ, x² ≥ 0; ∑ᵢ aᵢ = ½; π ≈ 3.14159; √2 ≠ 1.41 ± 0.01 → ∞.",
    "Other digits: fullwidth １２３４, Arabic-Indic ٠١٢٣, Devanagari ०१२, Roman Ⅻ, ①②③.",
    "Combining marks: e\u0301 a\u0308 n\u0303 vs é ä ñ; zero-width\u200bspace; NBSP\u00a0here.",
    "Contractions: don't, I'LL, we've, they're, she'd, it's, WE'RE, o'clock, rock'n'roll.",
    "Whitespace:\ttab\t\tdouble tab\r\nCRLF line\n\n\nthree newlines    four spaces  12  34\n",
    "Code: for (int i = 0; i < n; ++i) { sum += a[i] * 0x1F; } // C++ && || != ==",
    "JSON: {\"id\": 12345, \"price\": 1234.5, \"tags\": [\"a\", \"b\"], \"ok\": true, \"x\": null}",
    "URL: https://example.org/path?q=token%20ize&lang=en#section-3 and e-mail a.b@c.de",
]
"""Hand-written lines mixed into ``varied_text``: languages, scripts, digits, emoji, code."""


def _number_line(rng) -> str:
    """Numbers written the ways text writes them (seeded: the same on every run)."""
    n = rng.randint(0, 10 ** rng.randint(1, 12))
    return (
        f"Numbers: {n} and {n:,} and {rng.random() * 10 ** rng.randint(-6, 9):.{rng.randint(0, 6)}f}, "
        f"{rng.uniform(-1, 1):.3e}, {rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-"
        f"{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}, "
        f"v{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}, ${rng.randint(1, 9999)}.99, "
        f"{rng.randint(1, 100)}%, +{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}, "
        f"0x{rng.getrandbits(32):08X}, {rng.randint(2, 9)}x{rng.randint(2, 99)}"
    )


def varied_text(min_bytes: int = 100_000, seed: int = 0) -> str:
    """At least ``min_bytes`` UTF-8 bytes of varied text, built offline and deterministically.

    The Python Language Reference that ships with CPython (``pydoc_data.topics``: English
    prose and code, in 3,000-character pieces of each topic) interleaved with
    ``VARIED_LINES`` (non-English scripts, other digits, emoji, whitespace, code) and seeded
    lines of numbers. Used to prove a rebuilt tokenizer equal to the real one.
    """
    import pydoc_data.topics
    import random

    if not _is_int(min_bytes) or not 1 <= min_bytes <= 10_000_000:
        raise ValueError(f"min_bytes must be an int from 1 to 10,000,000, got {min_bytes!r}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    rng = random.Random(seed)
    topics = pydoc_data.topics.topics
    keys = sorted(topics)
    parts: list[str] = []
    size, index = 0, 0
    while size < min_bytes:
        topic = topics[keys[index % len(keys)]]
        start = (index // len(keys)) * 3_000
        piece = topic[start : start + 3_000] or topic[:3_000]
        for part in (piece, VARIED_LINES[index % len(VARIED_LINES)], _number_line(rng)):
            parts.append(part)
            size += len(to_bytes(part)) + 1
        index += 1
    return "\n".join(parts)


# --- token budgets -----------------------------------------------------------------------


def _token_ids(text: str, tokenizer) -> list[int]:
    """Ids of ``text`` without special tokens, for a Hugging Face tokenizer or ours."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.encode(text)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(
            f"text is empty (got {text!r}): expected at least one non-whitespace character; "
            "an empty prompt costs tokens (special tokens) and carries no content"
        )
    return text


def count_tokens(text: str, tokenizer) -> int:
    """Number of tokens ``text`` costs, without special tokens; empty text is an error."""
    return len(_token_ids(_check_text(text), tokenizer))


def truncate_to_max_tokens(text: str, tokenizer, max_tokens: int) -> str:
    """The longest prefix of ``text`` that fits in ``max_tokens`` tokens.

    Warns (``UserWarning``) saying how many tokens were dropped when the text is cut;
    returns ``text`` unchanged when it fits. Cuts on token boundaries, mapped back to the
    original characters (offsets for Hugging Face tokenizers, bytes for ours), so the
    result is a slice of the original text, not a lower-cased or re-spaced decoding. (For
    one of ours with a Unicode normaliser, such as Qwen2's NFC, it is a slice of the
    normalised text.)
    """
    _check_text(text)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if isinstance(tokenizer, BPETokenizer):
        ids = tokenizer.encode(text)
        if len(ids) <= max_tokens:
            return text
        kept_bytes = tokenizer.decode_bytes(ids[:max_tokens])
        # A cut inside a multi-byte character drops that partial character.
        kept = kept_bytes.decode("utf-8", errors="ignore")
    else:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoding["input_ids"]
        if len(ids) <= max_tokens:
            return text
        kept = text[: encoding["offset_mapping"][max_tokens - 1][1]]
    warnings.warn(
        f"text has {len(ids)} tokens, more than max_tokens={max_tokens}: truncated, "
        f"dropping the last {len(ids) - max_tokens} tokens "
        f"({len(text) - len(kept)} of {len(text)} characters)",
        UserWarning,
        stacklevel=2,
    )
    return kept


def tokens_per_character(texts: str | Sequence[str], encode: Callable[[str], Sequence[int]]) -> float:
    """Tokens per character of ``texts`` under ``encode`` (lower = better compression)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    characters = sum(len(t) for t in texts)
    if characters == 0:
        raise ValueError("texts are empty: expected at least one character to measure")
    return sum(len(encode(t)) for t in texts) / characters


# --- WordPiece (BERT, MiniLM) ------------------------------------------------------------


def wordpiece_word(
    word: str,
    vocab: Mapping[str, int] | set[str],
    unk_token: str = "[UNK]",
    prefix: str = "##",
    max_chars: int = 100,
) -> list[str]:
    """WordPiece pieces of one pre-tokenized ``word``: greedy longest match first.

    From the start of the word, take the longest prefix that is in ``vocab``; then, from where
    it ended, the longest ``prefix + rest`` ("##ization") that is in ``vocab``; and so on. If
    at some point no piece matches, the *whole word* becomes ``unk_token`` (not just the
    unmatched part), as does a word longer than ``max_chars`` characters. This is BERT's
    ``WordpieceTokenizer.tokenize`` (google-research/bert ``tokenization.py``) and the
    ``tokenizers`` library's ``WordPiece`` model. Used in notebook 01.
    """
    if not isinstance(word, str):
        raise ValueError(f"word must be a str, got {type(word).__name__}")
    if not word:
        return []
    if len(word) > max_chars:
        return [unk_token]
    pieces: list[str] = []
    start = 0
    while start < len(word):
        end = len(word)
        while end > start:  # shrink the candidate until it is a vocabulary entry
            candidate = word[start:end] if start == 0 else prefix + word[start:end]
            if candidate in vocab:
                break
            end -= 1
        if end == start:
            return [unk_token]
        pieces.append(candidate)
        start = end
    return pieces


def wordpiece_encode(
    text: str,
    vocab: Mapping[str, int],
    pre_tokenize: Callable[[str], list[str]],
    unk_token: str = "[UNK]",
    prefix: str = "##",
    max_chars: int = 100,
) -> list[str]:
    """WordPiece tokens of ``text`` (no special tokens): ``pre_tokenize`` then ``wordpiece_word``.

    ``pre_tokenize(text) -> words`` is the tokenizer's own normalisation and word split (for
    BERT: lower-case, strip accents, split on whitespace and punctuation, every CJK character a
    word); ``bert_pre_tokenizer(tokenizer)`` builds it from a Hugging Face fast tokenizer.
    Ids are ``[vocab[t] for t in tokens]``. Used in notebook 01 (checked equal to MiniLM's
    tokenizer in the notebook and in ``tests/test_tokenization_wordpiece.py``).
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if unk_token not in vocab:
        raise ValueError(f"unk_token {unk_token!r} is not in vocab: every WordPiece vocabulary needs it")
    return [piece for word in pre_tokenize(text)
            for piece in wordpiece_word(word, vocab, unk_token, prefix, max_chars)]


def bert_pre_tokenizer(tokenizer) -> Callable[[str], list[str]]:
    """``text -> words`` with a Hugging Face fast WordPiece tokenizer's normalizer and
    pre-tokenizer (the steps before the WordPiece model), so ``wordpiece_encode`` replaces
    only the model step."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {}
    if model.get("type") != "WordPiece":
        raise ValueError(
            f"expected a fast tokenizer with a WordPiece model (BERT-family), got "
            f"{type(tokenizer).__name__} with model {model.get('type')!r}"
        )
    normalizer, pre = backend.normalizer, backend.pre_tokenizer

    def pre_tokenize(text: str) -> list[str]:
        normal = normalizer.normalize_str(text) if normalizer is not None else text
        return [word for word, _ in pre.pre_tokenize_str(normal)] if pre is not None else normal.split()

    return pre_tokenize
