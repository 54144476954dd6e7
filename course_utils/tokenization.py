"""Tokenization (notebook 01): a byte-level BPE written from scratch, and token budgets.

Byte-level BPE (the GPT-2 / Llama / SmolLM2 family) starts from the 256 possible bytes, so
*every* string can be encoded and nothing is ever "unknown". Training repeats one step:
count adjacent token pairs, merge the most frequent pair into a new token. Encoding
replays the learned merges in the order they were learned.

- ``count_pairs`` / ``merge_pair``: the two building blocks of the merge loop.
- ``pretokenize``: split text into word-like chunks (merges never cross a chunk boundary).
- ``train_bpe``: the merge loop with *incremental* pair counts (only the words that contain
  the merged pair are re-counted), so ~4,000 merges on 100 KB take well under a second
  in pure Python. ``train_bpe_naive`` is the textbook loop it must agree with.
- ``BPETokenizer``: ``encode`` / ``decode`` that round-trip any Python string exactly.
- ``count_tokens`` / ``truncate_to_max_tokens``: token budgets for the pretrained tokenizers
  and ours, with a clear error for empty input and a warning when text is cut.
"""

from __future__ import annotations

import heapq
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

Pair = tuple[int, int]

NUM_BYTES = 256

# GPT-2's pre-tokenizer, written for Python's `re` (which has no \p{L}): an optional space
# followed by letters, or 1-3 digits, or other symbols; then whitespace runs. `[^\W\d_]` is
# "word characters except digits and underscore" = letters (and other alphanumerics); the
# underscore joins the symbol class. Together the alternatives cover every character, so
# "".join(pretokenize(text)) == text for any string (a property test checks it).
PRETOKENIZE_PATTERN = re.compile(
    r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
)


def pretokenize(text: str) -> list[str]:
    """Split ``text`` into chunks ("words" with their leading space); joins back to ``text``."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    return PRETOKENIZE_PATTERN.findall(text)


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


def _check_vocab_size(vocab_size: object) -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < NUM_BYTES:
        raise ValueError(
            f"vocab_size must be an int >= {NUM_BYTES} (the byte alphabet), got {vocab_size!r}"
        )
    return vocab_size


def _word_counts(text: str) -> Counter[bytes]:
    if not isinstance(text, str) or not text:
        raise ValueError(f"training text must be a non-empty str, got {text!r:.40}")
    return Counter(to_bytes(chunk) for chunk in pretokenize(text))


def _best_pair(counts: dict[Pair, int]) -> Pair:
    """Most frequent pair; ties go to the smallest pair, so training is deterministic."""
    return min(counts, key=lambda pair: (-counts[pair], pair))


@dataclass
class BPETokenizer:
    """A byte-level BPE tokenizer: ids 0-255 are bytes, id ``256 + k`` is merge ``k``.

    ``merges[k] = (left, right)`` means the token ``256 + k`` is ``left`` followed by
    ``right``. Keeping only the first ``m`` merges gives exactly the tokenizer that training
    to ``vocab_size = 256 + m`` would have produced (see ``truncated``).
    """

    merges: list[Pair] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(NUM_BYTES)}
        self.ranks: dict[Pair, int] = {}
        for rank, (left, right) in enumerate(self.merges):
            new_id = NUM_BYTES + rank
            if left not in self.vocab or right not in self.vocab:
                raise ValueError(f"merge {rank} = {(left, right)} uses ids not defined before it")
            self.vocab[new_id] = self.vocab[left] + self.vocab[right]
            self.ranks[(left, right)] = rank
        self._cache: dict[str, list[int]] = {}

    def __repr__(self) -> str:  # the merges list is long: don't print it
        return f"BPETokenizer(vocab_size={self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        return NUM_BYTES + len(self.merges)

    def truncated(self, vocab_size: int) -> BPETokenizer:
        """The same tokenizer with only its first ``vocab_size - 256`` merges."""
        _check_vocab_size(vocab_size)
        if vocab_size > self.vocab_size:
            raise ValueError(f"vocab_size {vocab_size} exceeds this tokenizer's {self.vocab_size}")
        return BPETokenizer(self.merges[: vocab_size - NUM_BYTES])

    def _encode_chunk(self, chunk: str) -> list[int]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        ids = list(to_bytes(chunk))
        while len(ids) >= 2:
            # The pair that was learned earliest is applied first, as in training.
            pair = min(pairwise(ids), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            ids = merge_pair(ids, pair, NUM_BYTES + self.ranks[pair])
        if len(self._cache) < 100_000:
            self._cache[chunk] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (any Python string; ``""`` gives ``[]``)."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return [i for chunk in pretokenize(text) for i in self._encode_chunk(chunk)]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The raw bytes of ``ids`` (a token may hold part of a multi-byte character)."""
        try:
            return b"".join(self.vocab[i] for i in ids)
        except KeyError as error:
            raise ValueError(
                f"id {error.args[0]} is not in the vocabulary (ids 0..{self.vocab_size - 1})"
            ) from None

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        """Text of ``ids``; ``decode(encode(s)) == s`` for every string ``s``.

        Bytes that are not valid UTF-8 (possible for an arbitrary id sequence, e.g. one cut
        in the middle of a character) are handled with ``errors`` (default: U+FFFD).
        """
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


def train_bpe(
    text: str,
    vocab_size: int,
    on_merge: Callable[[int, Pair, int], None] | None = None,
) -> BPETokenizer:
    """Learn ``vocab_size - 256`` merges on ``text`` (stops early if no pair is left).

    Incremental counting: the corpus is kept as unique words with their frequencies;
    ``pair_counts`` holds every adjacent pair's total count and ``where[pair]`` the words that
    contain it. A merge only re-counts those words, and a heap with lazy deletion finds the
    most frequent pair. Same result as ``train_bpe_naive`` (a test checks it).

    ``on_merge(rank, pair, count)`` is called after each merge (e.g. to print progress).
    """
    _check_vocab_size(vocab_size)
    word_counts = _word_counts(text)
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
            for old in pairwise(ids):  # forget this word's old pairs ...
                pair_counts[old] -= freq
                changed.add(old)
            ids = words[index] = merge_pair(ids, pair, new_id)
            for new in pairwise(ids):  # ... and count its new ones
                pair_counts[new] += freq
                where[new].add(index)
                changed.add(new)
        # `where` may keep words that lost a pair: harmless, merge_pair then finds nothing.
        for changed_pair in changed:
            count = pair_counts[changed_pair]
            if count > 0:
                heapq.heappush(heap, (-count, changed_pair))
            else:
                del pair_counts[changed_pair]
        if on_merge is not None:
            on_merge(len(merges) - 1, pair, -negative_count)
    return BPETokenizer(merges)


def train_bpe_naive(text: str, vocab_size: int) -> BPETokenizer:
    """The textbook merge loop: recount every pair in the whole corpus before each merge.

    Slow (O(corpus) per merge); the reference ``train_bpe`` is tested against.
    """
    _check_vocab_size(vocab_size)
    word_counts = _word_counts(text)
    words = [list(word) for word in word_counts]
    freqs = list(word_counts.values())
    merges: list[Pair] = []
    while len(merges) < vocab_size - NUM_BYTES:
        counts: dict[Pair, int] = {}
        for ids, freq in zip(words, freqs, strict=True):
            count_pairs(ids, counts, weight=freq)
        if not counts:
            break
        pair = _best_pair(counts)
        new_id = NUM_BYTES + len(merges)
        merges.append(pair)
        words = [merge_pair(ids, pair, new_id) for ids in words]
    return BPETokenizer(merges)


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
    result is a slice of the original text, not a lower-cased or re-spaced decoding.
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
