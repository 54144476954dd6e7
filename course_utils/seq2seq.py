"""Used in notebook 08: a tiny encoder-decoder trained live, human-readable dates -> ISO dates.

- ``make_dates(n, seed)`` generates ``DateExample``s such as ``"March 5, 2024" -> "2024-03-05"``
  in several formats, remembering where the year, month and day sit in the source text.
- ``CharTokenizer`` maps characters to ids (one id per character, plus ``<pad>`` / ``</s>``).
- ``build_t5`` makes a small ``T5ForConditionalGeneration`` from a ``T5Config``;
  ``train_seq2seq`` trains it with the course's one loop (``course_utils.training.train``,
  passing ``seq2seq_loss``; seeded, CPU-friendly, warm-up + cosine, gradient clipping);
  ``exact_match`` evaluates it; ``cross_attention`` and ``alignment_shares`` show which
  source characters each output character reads.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

from course_utils import training
from course_utils.params import positive_int

FIELDS = ("year", "month", "day")
# Output positions of each field in "YYYY-MM-DD".
ISO_SPANS = {"year": (0, 4), "month": (5, 7), "day": (8, 10)}
ISO_LENGTH = 10

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

FIRST_DATE = dt.date(1950, 1, 1)
LAST_DATE = dt.date(2049, 12, 31)


@dataclass(frozen=True)
class DateExample:
    """One source/target pair. ``spans[field] = (start, end)``: characters of ``text``."""

    text: str
    iso: str
    format: str
    spans: dict[str, tuple[int, int]] = field(hash=False, compare=False)


def _assemble(parts: Sequence[tuple[str, str | None]]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Join ``(piece, field_or_None)`` parts into a string, recording each field's span."""
    text, spans = "", {}
    for piece, name in parts:
        if name is not None:
            spans[name] = (len(text), len(text) + len(piece))
        text += piece
    return text, spans


def _format_parts(date: dt.date, name: str) -> list[tuple[str, str | None]]:
    y, m, d = str(date.year), MONTHS[date.month - 1], date.day
    weekday = WEEKDAYS[date.weekday()]
    if name == "d Month yyyy":  # 5 March 2024
        return [(str(d), "day"), (" ", None), (m, "month"), (" ", None), (y, "year")]
    if name == "Month d, yyyy":  # March 5, 2024
        return [(m, "month"), (" ", None), (str(d), "day"), (", ", None), (y, "year")]
    if name == "Mon dd yyyy":  # Mar 05 2024
        return [(m[:3], "month"), (" ", None), (f"{d:02d}", "day"), (" ", None), (y, "year")]
    if name == "weekday, month d, yyyy":  # tuesday, march 5, 2024
        return [(weekday.lower() + ", ", None), (m.lower(), "month"), (" ", None),
                (str(d), "day"), (", ", None), (y, "year")]
    if name == "d.m.yyyy":  # 5.3.2024
        return [(str(d), "day"), (".", None), (str(date.month), "month"), (".", None),
                (y, "year")]
    if name == "yyyy, d MON":  # 2024, 5 MAR
        return [(y, "year"), (", ", None), (str(d), "day"), (" ", None),
                (m[:3].upper(), "month")]
    raise ValueError(f"unknown date format {name!r}; expected one of {DATE_FORMATS}")


DATE_FORMATS = (
    "d Month yyyy",
    "Month d, yyyy",
    "Mon dd yyyy",
    "weekday, month d, yyyy",
    "d.m.yyyy",
    "yyyy, d MON",
)


def format_date(date: dt.date, fmt: str) -> DateExample:
    """Write ``date`` in format ``fmt`` (one of ``DATE_FORMATS``), with its ISO target."""
    text, spans = _assemble(_format_parts(date, fmt))
    return DateExample(text, date.isoformat(), fmt, spans)


def split_dates(seed: int = 0, held_out_fraction: float = 0.1) -> tuple[list[dt.date], list[dt.date]]:
    """All dates 1950-2049 shuffled with ``seed`` and split into (train, held-out) dates.

    Held-out *dates* never appear in training, in any format, so exact match on them
    measures generalisation rather than memory.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    days = (LAST_DATE - FIRST_DATE).days + 1
    dates = [FIRST_DATE + dt.timedelta(days=i) for i in range(days)]
    random.Random(seed).shuffle(dates)
    cut = int(round(days * (1.0 - held_out_fraction)))
    return dates[:cut], dates[cut:]


def make_dates(
    n: int,
    seed: int = 0,
    split: str = "train",
    formats: Sequence[str] = DATE_FORMATS,
) -> list[DateExample]:
    """``n`` examples from the ``"train"`` or ``"test"`` dates, each in a random format.

    Deterministic for a given ``(n, seed, split, formats)``; train and test dates are
    disjoint (see ``split_dates``, which always uses seed 0 so every caller agrees).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    unknown = [f for f in formats if f not in DATE_FORMATS]
    if not formats or unknown:
        raise ValueError(f"formats must be a non-empty subset of {DATE_FORMATS}, got {formats!r}")
    train_dates, test_dates = split_dates(0)
    pool = train_dates if split == "train" else test_dates
    rng = random.Random(f"{seed}-{split}")
    return [format_date(rng.choice(pool), rng.choice(list(formats))) for _ in range(n)]


class CharTokenizer:
    """One id per character. ``<pad>`` = 0 (also T5's decoder start), ``</s>`` = 1.

    ``encode`` raises ``ValueError`` on empty text or on a character outside the alphabet,
    naming the character, its position and the allowed set.
    """

    PAD, EOS = 0, 1
    SPECIALS = ("<pad>", "</s>")
    DEFAULT_ALPHABET = (
        " ,-./0123456789"
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        "abcdefghijklmnopqrstuvwxyz"
    )

    def __init__(self, alphabet: str = DEFAULT_ALPHABET) -> None:
        if not alphabet or len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet must be non-empty with no repeated characters, got {alphabet!r}")
        self.alphabet = alphabet
        self.char_to_id = {c: i + len(self.SPECIALS) for i, c in enumerate(alphabet)}
        self.id_to_char = {i: c for c, i in self.char_to_id.items()}

    @property
    def vocab_size(self) -> int:
        return len(self.SPECIALS) + len(self.alphabet)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """``text`` -> ids, one per character, then ``</s>`` if ``add_eos``."""
        if not isinstance(text, str):
            raise ValueError(f"expected a string, got {type(text).__name__}")
        if not text:
            raise ValueError("cannot encode an empty string: expected at least one character")
        ids = []
        for position, char in enumerate(text):
            if char not in self.char_to_id:
                raise ValueError(
                    f"unknown character {char!r} at position {position} of {text!r}; "
                    f"expected one of {self.alphabet!r}"
                )
            ids.append(self.char_to_id[char])
        return ids + [self.EOS] if add_eos else ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """ids -> text: skips ``<pad>``, stops at the first ``</s>``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        chars = []
        for i in ids:
            if i == self.EOS:
                break
            if i == self.PAD:
                continue
            if i not in self.id_to_char:
                raise ValueError(f"unknown id {i}; expected 0..{self.vocab_size - 1}")
            chars.append(self.id_to_char[i])
        return "".join(chars)

    def tokens(self, text: str, add_eos: bool = True) -> list[str]:
        """Readable labels, one per id of ``encode(text)`` (for plots)."""
        return list(text) + (["</s>"] if add_eos else [])

    def batch(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask``, both ``(B, T_max)``."""
        if not texts:
            raise ValueError("expected at least one text, got an empty batch")
        encoded = [self.encode(t) for t in texts]
        width = max(len(e) for e in encoded)
        input_ids = torch.full((len(encoded), width), self.PAD, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


@dataclass
class Seq2SeqConfig:
    """The tiny T5 that learns dates in under a minute on a CPU (see COURSE_DESIGN)."""

    d_model: int = 64
    d_ff: int = 128
    num_layers: int = 2  # encoder layers; the decoder has as many
    num_heads: int = 4
    dropout: float = 0.0
    attn_implementation: str = "sdpa"


def build_t5(tokenizer: CharTokenizer, config: Seq2SeqConfig | None = None, seed: int = 0) -> T5ForConditionalGeneration:
    """A randomly initialised ``T5ForConditionalGeneration`` for ``tokenizer``'s vocabulary."""
    config = config or Seq2SeqConfig()
    if config.d_model % config.num_heads:
        raise ValueError(
            f"d_model ({config.d_model}) must be divisible by num_heads ({config.num_heads})"
        )
    t5_config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=config.d_model,
        d_kv=config.d_model // config.num_heads,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_layers,
        num_heads=config.num_heads,
        dropout_rate=config.dropout,
        feed_forward_proj="relu",
        pad_token_id=tokenizer.PAD,
        eos_token_id=tokenizer.EOS,
        decoder_start_token_id=tokenizer.PAD,
        attn_implementation=config.attn_implementation,
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(t5_config)


@dataclass
class TrainConfig(training.TrainConfig):
    """``course_utils.training.TrainConfig`` with the date task's data settings and the
    defaults that train the tiny T5 in under a minute (see COURSE_DESIGN): 700 steps,
    batch 32, lr 3e-3, 100 warm-up steps (all steps if fewer), clipping at 1.0, Adam's
    usual betas, one thread.

    ``warmup``, ``clip`` and ``log_every`` read ``warmup_steps``, ``grad_clip`` and
    ``eval_every`` (the names notebook 08 prints).
    """

    steps: int = 700
    # None = 100 steps, or all of them when there are fewer
    warmup_steps: int | None = None
    eval_every: int = 100
    betas: tuple[float, float] = (0.9, 0.999)
    # One thread: this model's matrices are tiny, so a second thread adds more sync than
    # speed, and under CPU contention 2 lock-stepped threads ran ~30x slower than one.
    threads: int | None = 1
    batch_size: int = 32
    train_examples: int = 20_000

    def __post_init__(self) -> None:
        if self.warmup_steps is None:
            self.warmup_steps = min(100, self.steps) if isinstance(self.steps, int) else 100
        super().__post_init__()
        positive_int("batch_size", self.batch_size)
        positive_int("train_examples", self.train_examples)

    @property
    def warmup(self) -> int:
        return self.warmup_steps

    @property
    def clip(self) -> float | None:
        return self.grad_clip

    @property
    def log_every(self) -> int:
        return self.print_every or self.eval_every


def seq2seq_loss(model: T5ForConditionalGeneration, inputs: dict[str, torch.Tensor],
                 targets: torch.Tensor) -> torch.Tensor:
    """The ``loss_fn`` of ``training.train`` for T5: the model's own cross-entropy.

    inputs: ``input_ids`` / ``attention_mask`` ``(B, T_src)``; targets ``(B, T_out)``
    (T5 shifts them right, after its start token, to make the decoder's input).
    """
    return model(**inputs, labels=targets).loss


def train_seq2seq(
    model: T5ForConditionalGeneration,
    tokenizer: CharTokenizer,
    config: TrainConfig | None = None,
    log: Callable[[str], None] | None = print,
) -> training.History:
    """Train on ``config.train_examples`` date pairs with ``course_utils.training.train``.

    AdamW with linear warm-up then cosine decay (``config.lr_at``), gradient clipping, on
    ``config.threads`` threads. ``log`` receives a text progress bar every ``log_every``
    steps (deterministic: losses rounded, no timings, so a re-executed notebook prints the
    same lines); ``log=None`` is silent. Returns the ``History``: ``losses`` (one per
    step) and ``seconds``.
    """
    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ValueError(
            f"config must be a course_utils.seq2seq.TrainConfig (it has the batch size and "
            f"data size), got {type(config).__module__}.{type(config).__name__}"
        )
    examples = make_dates(config.train_examples, seed=config.seed, split="train")
    sources = tokenizer.batch([e.text for e in examples])
    targets = torch.tensor([tokenizer.encode(e.iso) for e in examples])  # (N, 11): all same length

    def get_batch(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rows = torch.randint(0, len(examples), (config.batch_size,), generator=generator)
        width = int(sources["attention_mask"][rows].sum(1).max())  # trim padding columns
        inputs = {"input_ids": sources["input_ids"][rows, :width],  # (B, T_src)
                  "attention_mask": sources["attention_mask"][rows, :width]}
        return inputs, targets[rows]  # (B, 11)

    return training.train(model, get_batch, config, loss_fn=seq2seq_loss, log=log)


@torch.no_grad()
def translate(model, tokenizer: CharTokenizer, texts: Sequence[str], batch_size: int = 256) -> list[str]:
    """Greedy decoding of each text; returns the decoded strings."""
    outputs: list[str] = []
    for first in range(0, len(texts), batch_size):
        batch = tokenizer.batch(texts[first : first + batch_size])
        generated = model.generate(
            **batch, max_new_tokens=ISO_LENGTH + 1, do_sample=False, num_beams=1
        )
        outputs.extend(tokenizer.decode(row) for row in generated)
    return outputs


def exact_match(model, tokenizer: CharTokenizer, examples: Sequence[DateExample]) -> float:
    """Fraction of examples whose greedy output equals the ISO date exactly."""
    if not examples:
        raise ValueError("expected at least one example, got none")
    predictions = translate(model, tokenizer, [e.text for e in examples])
    return sum(p == e.iso for p, e in zip(predictions, examples, strict=True)) / len(examples)


@torch.no_grad()
def cross_attention(model, tokenizer: CharTokenizer, text: str) -> tuple[torch.Tensor, str]:
    """The decoder's cross-attention while it writes its own greedy output for ``text``.

    Returns ``(weights, output)``: weights ``(layers, heads, T_out, T_src)`` where row t is
    the step that *produces* output character t (last row: ``</s>``), and columns are the
    source characters plus ``</s>``. Needs eager attention (``sdpa`` returns no weights):
    call ``model.set_attn_implementation("eager")`` first.
    """
    if model.config._attn_implementation != "eager":
        raise ValueError(
            "cross-attention weights need eager attention, got "
            f"{model.config._attn_implementation!r}: call model.set_attn_implementation('eager')"
        )
    output = translate(model, tokenizer, [text])[0]
    source = tokenizer.batch([text])
    target = torch.tensor([tokenizer.encode(output)])  # (1, T_out) ends with </s>
    decoder_input_ids = torch.cat([torch.tensor([[tokenizer.PAD]]), target[:, :-1]], dim=1)
    result = model(**source, decoder_input_ids=decoder_input_ids, output_attentions=True)
    weights = torch.stack([layer[0] for layer in result.cross_attentions])  # (L, H, T_out, T_src)
    return weights, output


def alignment_shares(
    model, tokenizer: CharTokenizer, examples: Sequence[DateExample]
) -> dict[str, tuple[float, float]]:
    """For each field, (attention share on the right source span, uniform baseline).

    For the output characters of a field (e.g. the 4 year digits), the share is the
    cross-attention weight that falls on that field's characters in the source, averaged
    over layers, heads, those output positions and the examples. The baseline is what
    uniform attention would give: span length / source length (``</s>`` included).
    Only examples the model translates correctly are used (so rows line up with fields).
    """
    totals = {f: [0.0, 0.0, 0] for f in FIELDS}
    for example in examples:
        weights, output = cross_attention(model, tokenizer, example.text)
        if output != example.iso:
            continue
        per_position = weights.mean(dim=(0, 1))  # (T_out, T_src)
        source_length = per_position.shape[1]
        for name in FIELDS:
            out_start, out_end = ISO_SPANS[name]
            src_start, src_end = example.spans[name]
            share = per_position[out_start:out_end, src_start:src_end].sum(1).mean()
            totals[name][0] += float(share)
            totals[name][1] += (src_end - src_start) / source_length
            totals[name][2] += 1
    if totals[FIELDS[0]][2] == 0:
        raise ValueError("the model translated none of the examples correctly: train it first")
    return {name: (s / n, u / n) for name, (s, u, n) in totals.items()}


def load_seq2seq(name: str):
    """A pretrained encoder-decoder (hub id or local directory) with its tokenizer, eager."""
    from course_utils.models import _load_named

    return _load_named(name, AutoModelForSeq2SeqLM)
