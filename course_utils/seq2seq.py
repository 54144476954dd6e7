"""Used in notebook 08: a tiny encoder-decoder trained live, human-readable dates -> ISO dates.

- ``make_dates(n, seed)`` generates ``DateExample``s such as ``"March 5, 2024" -> "2024-03-05"``
  in several formats, remembering where the year, month and day sit in the source text.
- ``CharTokenizer`` maps characters to ids (one id per character, plus ``<pad>`` / ``</s>``).
- ``build_t5`` makes a small ``T5ForConditionalGeneration`` from a ``T5Config``; the
  course's one loop trains it: ``training.train(model, date_batches(tokenizer),
  date_train_config(steps), loss_fn=seq2seq_loss)`` (seeded, CPU-friendly, warm-up +
  cosine, gradient clipping);
  ``exact_match`` evaluates it; ``cross_attention`` and ``alignment_shares`` show which
  source characters each output character reads.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch
from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

from course_utils import training
from course_utils.params import ParameterError, positive_int

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


# The date T5's training batches: 32 pairs a step, drawn from 20 000 training dates.
BATCH_SIZE = 32
TRAIN_EXAMPLES = 20_000


def date_train_config(steps: int = 700, seed: int = 0, **overrides) -> training.TrainConfig:
    """The course's one ``training.TrainConfig``, with the settings that train the tiny date T5
    in under a minute (see COURSE_DESIGN): ``steps`` steps, lr 3e-3, 100 warm-up steps (all
    of them when there are fewer), clipping at 1.0, Adam's usual betas (0.9, 0.999), a log
    line every 100 steps, and one thread: this model's matrices are tiny, so a second
    thread adds more synchronisation than speed (and under CPU contention two lock-stepped
    threads ran ~30x slower than one). ``overrides`` are any other ``TrainConfig`` fields.
    """
    known = {f.name for f in fields(training.TrainConfig)} - {"steps", "seed"}
    for name in overrides:
        if name not in known:
            raise ParameterError(name, f"one of the TrainConfig fields {sorted(known)}", "an unknown name")
    warmup = min(100, steps) if isinstance(steps, int) and not isinstance(steps, bool) else 100
    settings = dict(steps=steps, lr=3e-3, warmup_steps=warmup, grad_clip=1.0, eval_every=100,
                    betas=(0.9, 0.999), threads=1, seed=seed)
    return training.TrainConfig(**{**settings, **overrides})


def seq2seq_loss(model: T5ForConditionalGeneration, inputs: dict[str, torch.Tensor],
                 targets: torch.Tensor) -> torch.Tensor:
    """The ``loss_fn`` of ``training.train`` for T5: the model's own cross-entropy.

    inputs: ``input_ids`` / ``attention_mask`` ``(B, T_src)``; targets ``(B, T_out)``
    (T5 shifts them right, after its start token, to make the decoder's input).
    """
    return model(**inputs, labels=targets).loss


def date_batches(
    tokenizer: CharTokenizer, batch_size: int = BATCH_SIZE, examples: int = TRAIN_EXAMPLES,
    seed: int = 0,
) -> Callable[[torch.Generator], tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """The ``get_batch`` of ``training.train`` for the date task (with ``loss_fn=seq2seq_loss``).

    ``examples`` training dates (``make_dates(..., split="train")``) are encoded once; each
    call draws ``batch_size`` of them from the generator the loop passes in and returns
    ``(inputs, targets)``: ``input_ids`` / ``attention_mask`` ``(B, T_src)``, trimmed to the
    longest source in the batch, and the ISO targets ``(B, 11)``.
    """
    positive_int("batch_size", batch_size)
    positive_int("examples", examples)
    dates = make_dates(examples, seed=seed, split="train")
    sources = tokenizer.batch([e.text for e in dates])
    targets = torch.tensor([tokenizer.encode(e.iso) for e in dates])  # (N, 11): all same length

    def get_batch(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rows = torch.randint(0, len(dates), (batch_size,), generator=generator)
        width = int(sources["attention_mask"][rows].sum(1).max())  # trim padding columns
        inputs = {"input_ids": sources["input_ids"][rows, :width],  # (B, T_src)
                  "attention_mask": sources["attention_mask"][rows, :width]}
        return inputs, targets[rows]  # (B, 11)

    return get_batch


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


@torch.no_grad()
def alignment_shares(
    model, tokenizer: CharTokenizer, examples: Sequence[DateExample], batch_size: int = 256
) -> dict[str, tuple[float, float]]:
    """For each field, (attention share on the right source span, uniform baseline).

    For the output characters of a field (e.g. the 4 year digits), the share is the
    cross-attention weight that falls on that field's characters in the source, averaged
    over layers, heads, those output positions and the examples. The baseline is what
    uniform attention would give: span length / source length (``</s>`` included).
    Only examples the model translates correctly are used (so rows line up with fields).
    The weights are those of ``cross_attention``, computed ``batch_size`` examples at a
    time (padded sources: padding gets no weight, and each example's own length is used).
    """
    positive_int("batch_size", batch_size)
    if model.config._attn_implementation != "eager":
        raise ValueError(
            "cross-attention weights need eager attention, got "
            f"{model.config._attn_implementation!r}: call model.set_attn_implementation('eager')"
        )
    outputs = translate(model, tokenizer, [e.text for e in examples], batch_size=batch_size)
    correct = [e for e, output in zip(examples, outputs, strict=True) if output == e.iso]
    if not correct:
        raise ValueError("the model translated none of the examples correctly: train it first")
    totals = {f: [0.0, 0.0, 0] for f in FIELDS}
    for first in range(0, len(correct), batch_size):
        group = correct[first : first + batch_size]
        source = tokenizer.batch([e.text for e in group])  # (B, T_src), padded
        target = torch.tensor([tokenizer.encode(e.iso) for e in group])  # (B, 11) ends with </s>
        start = torch.full((len(group), 1), tokenizer.PAD)
        decoder_input_ids = torch.cat([start, target[:, :-1]], dim=1)
        result = model(**source, decoder_input_ids=decoder_input_ids, output_attentions=True)
        weights = torch.stack(result.cross_attentions).mean(dim=(0, 2))  # (L, B, H, To, Ts) -> (B, To, Ts)
        for example, per_position, length in zip(group, weights, source["attention_mask"].sum(1).tolist(),
                                                 strict=True):
            for name, (share, uniform) in field_shares(example, per_position[:, :length]).items():
                totals[name][0] += share
                totals[name][1] += uniform
                totals[name][2] += 1
    return {name: (s / n, u / n) for name, (s, u, n) in totals.items()}


def field_shares(example: DateExample, weights: torch.Tensor) -> dict[str, tuple[float, float]]:
    """One example's (share, uniform baseline) per field, from its cross-attention averaged
    over layers and heads, ``weights (T_out, T_src)`` (rows: output characters; columns:
    its source characters and ``</s>``): the weight the field's output characters put on
    the field's source span, and that span's length over the source length."""
    shares = {}
    for name in FIELDS:
        out_start, out_end = ISO_SPANS[name]
        src_start, src_end = example.spans[name]
        share = weights[out_start:out_end, src_start:src_end].sum(1).mean()
        shares[name] = (float(share), (src_end - src_start) / weights.shape[1])
    return shares


def load_seq2seq(name: str):
    """A pretrained encoder-decoder (hub id or local directory) with its tokenizer, eager."""
    from course_utils.models import _load_named

    return _load_named(name, AutoModelForSeq2SeqLM)
