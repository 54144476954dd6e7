"""Used in notebook 07: where the time goes in a transformer's forward pass.

- ``profile_model(model, inputs)``: per-layer, per-sublayer latency (attention, FFN, norms,
  embeddings) of a scratch ``course_utils.blocks.Transformer`` (or ``CausalLM``), a
  transformers ``BertModel`` / ``RobertaModel`` / ``DistilBertModel`` or a Llama-style
  model, measured with forward pre-/post-hooks and ``time.perf_counter``.
  ``detail=True`` splits attention into Q/K/V projections, the attention core (scores,
  softmax, weighted sum) and W_O, and the FFN into up, activation and down. Each block
  also gets an ``other`` row: the block's own code between its sublayers (the two
  residual adds, module-call glue, the hooks themselves).
- ``length_sweep(block, lengths)`` + ``find_crossover``: attention vs FFN time against
  sequence length, and where attention's O(T²) part overtakes the FFN's O(T).
- ``top_ops(fn)``: the heaviest ATen operators according to ``torch.profiler``.

The stopwatch (``time_call``), the matmul peak and the FLOP formulas are in
``course_utils.measurement``, shared with notebook 10 and ``task bench``.

Timings depend on the machine and its load: a notebook prints them in cells tagged
``nbval-ignore-output``. Every row keeps the median and the minimum of the repeats: on a
busy machine the minimum (the least disturbed pass) is the one to read. Small element-wise
ops such as the residual adds are where load shows most: with two threads each one waits
for the second thread, which on a shared CPU can cost a scheduler time slice (notebook 07
measures it). Hooks cost a few microseconds per call, so ``LayerProfile`` also reports the
median time of the same forward pass without hooks.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from course_utils.blocks import Block, CausalLM, Transformer
from course_utils.measurement import time_call
from course_utils.params import integer, positive_int

Key = tuple[int | None, str]  # (layer index or None for embeddings/final norm, sublayer name)

# Sublayers derived by subtraction (parent minus its timed children), in detail mode.
_DERIVED = {
    "attn_core": ("attention", ("qkv_proj", "out_proj")),
    "ffn_act": ("ffn", ("ffn_up", "ffn_down")),
}


def _check_counts(warmup: int, repeats: int) -> None:
    integer("warmup", warmup, min=0)
    positive_int("repeats", repeats)


# ----------------------------------------------------------------------------- module groups
def _block_groups(block: nn.Module, layer: int, detail: bool) -> dict[Key, list[nn.Module]]:
    """Sublayer -> modules, for a scratch Block, a BertLayer, a DistilBERT block or a Llama layer."""
    if isinstance(block, Block):
        groups = {"block": [block], "attn_norm": [block.attn_norm], "attention": [block.attn],
                  "ffn_norm": [block.ffn_norm], "ffn": [block.ffn]}
        attn, ffn = block.attn, block.ffn
        qkv, out = [attn.q_proj, attn.k_proj, attn.v_proj], [attn.out_proj]
        up = [ffn.up_proj] + ([ffn.gate_proj] if ffn.gate_proj is not None else [])
        down = [ffn.down_proj]
    elif hasattr(block, "attention") and hasattr(block, "intermediate"):  # BertLayer
        sa, so = block.attention.self, block.attention.output
        groups = {"block": [block], "attention": [sa, so.dense], "attn_norm": [so.LayerNorm],
                  "ffn": [block.intermediate, block.output.dense],
                  "ffn_norm": [block.output.LayerNorm]}
        qkv, out = [sa.query, sa.key, sa.value], [so.dense]
        up, down = [block.intermediate.dense], [block.output.dense]
    elif hasattr(block, "sa_layer_norm") and hasattr(block, "ffn"):  # DistilBERT TransformerBlock
        sa, ffn = block.attention, block.ffn
        groups = {"block": [block], "attention": [sa], "attn_norm": [block.sa_layer_norm],
                  "ffn": [ffn], "ffn_norm": [block.output_layer_norm]}
        qkv, out = [sa.q_lin, sa.k_lin, sa.v_lin], [sa.out_lin]
        up, down = [ffn.lin1], [ffn.lin2]
    elif hasattr(block, "self_attn") and hasattr(block, "mlp"):  # Llama-style decoder layer
        sa, mlp = block.self_attn, block.mlp
        groups = {"block": [block], "attn_norm": [block.input_layernorm], "attention": [sa],
                  "ffn_norm": [block.post_attention_layernorm], "ffn": [mlp]}
        qkv, out = [sa.q_proj, sa.k_proj, sa.v_proj], [sa.o_proj]
        up, down = [mlp.gate_proj, mlp.up_proj], [mlp.down_proj]
    else:
        raise ValueError(
            f"don't know the sublayers of {type(block).__name__}: expected a scratch "
            "Block, a BertLayer (BERT, RoBERTa), a DistilBERT TransformerBlock or a Llama-style "
            "decoder layer"
        )
    if detail:
        groups.update(qkv_proj=qkv, out_proj=out, ffn_up=up, ffn_down=down)
    return {(layer, name): modules for name, modules in groups.items()}


def model_groups(model: nn.Module, detail: bool = False) -> dict[Key, list[nn.Module]]:
    """Which modules make up each (layer, sublayer) of a supported model.

    Keys are ``(None, "embeddings")``, ``(i, "block")``, ``(i, "attn_norm")``,
    ``(i, "attention")``, ``(i, "ffn_norm")``, ``(i, "ffn")`` (+ ``qkv_proj``, ``out_proj``,
    ``ffn_up``, ``ffn_down`` with ``detail``) and ``(None, "final_norm")`` if present.
    """
    groups: dict[Key, list[nn.Module]] = {}
    if isinstance(model, Block):
        return _block_groups(model, 0, detail)
    if isinstance(model, CausalLM):
        model = model.transformer
    if isinstance(model, Transformer):
        emb = [m for m in (model.token_emb, model.pos_emb, model.type_emb, model.emb_norm)
               if m is not None]
        blocks, final = model.blocks, model.final_norm
    else:
        base = getattr(model, "model", model)  # LlamaForCausalLM wraps a LlamaModel
        if hasattr(base, "embeddings") and hasattr(base, "encoder"):  # BertModel, RobertaModel
            emb, blocks, final = [base.embeddings], base.encoder.layer, None
        elif hasattr(base, "embeddings") and hasattr(base, "transformer"):  # DistilBertModel
            emb, blocks, final = [base.embeddings], base.transformer.layer, None
        elif hasattr(base, "embed_tokens") and hasattr(base, "layers"):  # Llama-style
            emb, blocks, final = [base.embed_tokens], base.layers, getattr(base, "norm", None)
        else:
            raise ValueError(
                f"don't know the layers of {type(model).__name__}: expected a scratch Transformer, "
                "CausalLM or Block, a transformers BertModel, RobertaModel, DistilBertModel or a "
                "Llama-style model"
            )
    groups[(None, "embeddings")] = emb
    for i, block in enumerate(blocks):
        groups.update(_block_groups(block, i, detail))
    if final is not None:
        groups[(None, "final_norm")] = [final]
    return groups


class _HookTimer:
    """Accumulates the wall-clock time spent inside each group's modules."""

    def __init__(self, groups: Mapping[Key, Sequence[nn.Module]]) -> None:
        self.elapsed: dict[Key, float] = defaultdict(float)
        self.calls: dict[Key, int] = defaultdict(int)
        self._handles = []
        for key, modules in groups.items():
            for module in modules:
                starts: list[float] = []  # a stack: a module may be re-entered

                def pre(_module, _args, starts=starts):
                    starts.append(time.perf_counter())

                def post(_module, _args, _output, key=key, starts=starts):
                    self.elapsed[key] += time.perf_counter() - starts.pop()
                    self.calls[key] += 1

                self._handles.append(module.register_forward_pre_hook(pre))
                self._handles.append(module.register_forward_hook(post))

    def reset(self) -> None:
        self.elapsed.clear()
        self.calls.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


# ----------------------------------------------------------------------------- profile
@dataclass
class SublayerTiming:
    """One sublayer's time over the repeats (seconds): the median, the minimum (the least
    disturbed run: use it on a busy machine) and the median's share of the whole pass."""

    layer: int | None
    name: str
    median_s: float
    min_s: float
    share: float

    def value(self, stat: str = "median") -> float:
        if stat not in ("median", "min"):
            raise ValueError(f"stat must be 'median' or 'min', got {stat!r}")
        return self.median_s if stat == "median" else self.min_s


@dataclass
class LayerProfile:
    """Per-(layer, sublayer) median latencies of one forward pass."""

    rows: list[SublayerTiming]
    total_s: float  # median forward time with the hooks installed
    unhooked_s: float  # median forward time without hooks (the hooks' overhead = difference)
    repeats: int
    samples: dict[Key, list[float]] = field(default_factory=dict, repr=False)

    def get(self, layer: int | None, name: str, stat: str = "median") -> float:
        for row in self.rows:
            if row.layer == layer and row.name == name:
                return row.value(stat)
        raise KeyError(f"no timing for layer {layer!r}, sublayer {name!r}")

    def by_sublayer(self, names: Sequence[str] | None = None, stat: str = "median") -> dict[str, float]:
        """Sum over layers of each sublayer's time (seconds), ``stat`` median or min."""
        totals: dict[str, float] = defaultdict(float)
        for row in self.rows:
            if row.layer is not None and row.name != "block" and (names is None or row.name in names):
                totals[row.name] += row.value(stat)
        return dict(totals)

    def layer_rows(self, layer: int) -> list[SublayerTiming]:
        return [row for row in self.rows if row.layer == layer]

    def table(self, names: Sequence[str] = ("attn_norm", "attention", "ffn_norm", "ffn", "other"),
              unit: str = "ms", stat: str = "median") -> str:
        """A text table: one row per layer, one column per sublayer, plus the block total."""
        units = {"ms": 1e3, "us": 1e6, "s": 1.0}
        if unit not in units:
            raise ValueError(f"unit must be one of {sorted(units)}, got {unit!r}")
        scale = units[unit]
        layers = sorted({row.layer for row in self.rows if row.layer is not None})
        header = f"{'layer':>7} " + " ".join(f"{n:>10}" for n in names) + f" {'block':>10}"
        lines = [header + f"   ({unit}, {stat} of {self.repeats})"]
        for layer in layers:
            values = {row.name: row.value(stat) for row in self.layer_rows(layer)}
            cells = " ".join(
                f"{values[n] * scale:>10.3f}" if n in values else f"{'-':>10}" for n in names
            )
            lines.append(f"{layer:>7} {cells} {values['block'] * scale:>10.3f}")
        for row in self.rows:
            if row.layer is None:
                lines.append(f"{row.name:>18}: {row.value(stat) * scale:.3f}")
        lines.append(f"{'forward (hooks)':>18}: {self.total_s * scale:.3f}"
                     f"   without hooks: {self.unhooked_s * scale:.3f}")
        return "\n".join(lines)


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def profile_model(
    model: nn.Module,
    inputs: Any,
    warmup: int = 2,
    repeats: int = 5,
    detail: bool = False,
    time_unhooked: bool = True,
) -> LayerProfile:
    """Time every layer and sublayer of ``model`` on ``inputs``.

    ``inputs``: a mapping (``model(**inputs)``, e.g. a tokenizer's batch), a tuple
    (``model(*inputs)``) or a tensor. After ``warmup`` untimed passes, each of ``repeats``
    passes records the time inside each group's modules; rows hold the medians. Each
    block also gets an ``other`` row: block time minus its sublayers (residual adds,
    reshapes, hook overhead). ``time_unhooked`` also times the same passes without hooks
    (``unhooked_s``; NaN when skipped). Runs under ``torch.no_grad()`` in eval mode.
    """
    _check_counts(warmup, repeats)
    groups = model_groups(model, detail=detail)
    was_training = model.training
    model.eval()
    unhooked = (time_call(lambda: _call(model, inputs), warmup=warmup, repeats=repeats).median_s
                if time_unhooked else float("nan"))
    timer = _HookTimer(groups)
    samples: dict[Key, list[float]] = defaultdict(list)
    totals = []
    try:
        with torch.no_grad():
            for _ in range(warmup):
                _call(model, inputs)
            for _ in range(repeats):
                timer.reset()
                start = time.perf_counter()
                _call(model, inputs)
                totals.append(time.perf_counter() - start)
                for key in groups:
                    samples[key].append(timer.elapsed.get(key, 0.0))
    finally:
        timer.remove()
        model.train(was_training)
    layers = sorted({layer for layer, _ in groups if layer is not None})
    for layer in layers:
        parts = ("attn_norm", "attention", "ffn_norm", "ffn")
        samples[(layer, "other")] = [
            samples[(layer, "block")][r] - sum(samples[(layer, p)][r] for p in parts)
            for r in range(repeats)
        ]
        if detail:
            for derived, (parent, children) in _DERIVED.items():
                samples[(layer, derived)] = [
                    samples[(layer, parent)][r] - sum(samples[(layer, c)][r] for c in children)
                    for r in range(repeats)
                ]
    total = statistics.median(totals)
    rows = [
        SublayerTiming(layer, name, statistics.median(values), min(values),
                       statistics.median(values) / total if total > 0 else 0.0)
        for (layer, name), values in samples.items()
    ]
    rows.sort(key=lambda row: (-1 if row.layer is None else row.layer, row.name))
    return LayerProfile(rows, total, unhooked, repeats, dict(samples))


# ----------------------------------------------------------------------------- scaling
@dataclass
class SweepPoint:
    """One sequence length of a ``length_sweep`` (median seconds per sublayer)."""

    seq_len: int
    attention_s: float
    ffn_s: float
    norms_s: float
    block_s: float


def length_sweep(
    block: Block,
    lengths: Sequence[int],
    batch: int = 1,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
    stat: str = "median",
) -> list[SweepPoint]:
    """Time one block's attention, FFN and norms on random ``(batch, T, C)`` inputs for each
    T in ``lengths`` (``stat``: median or min of the repeats). The block needs no
    positions, so any T works."""
    if not lengths:
        raise ValueError("lengths must be a non-empty sequence of positive integers")
    gen = torch.Generator().manual_seed(seed)
    points = []
    for seq_len in lengths:
        positive_int("lengths[i]", seq_len)
        x = torch.randn(batch, seq_len, block.config.d_model, generator=gen)
        profile = profile_model(block, x, warmup=warmup, repeats=repeats, time_unhooked=False)
        points.append(SweepPoint(
            seq_len,
            profile.get(0, "attention", stat),
            profile.get(0, "ffn", stat),
            profile.get(0, "attn_norm", stat) + profile.get(0, "ffn_norm", stat),
            profile.get(0, "block", stat),
        ))
    return points


def find_crossover(lengths: Sequence[float], first: Sequence[float],
                   second: Sequence[float]) -> float | None:
    """The smallest x where ``first`` rises above ``second`` (linear interpolation between
    the two measured points around the sign change); None if it never does."""
    if not (len(lengths) == len(first) == len(second)) or not lengths:
        raise ValueError(
            f"lengths, first and second must be non-empty and equally long, got "
            f"{len(lengths)}, {len(first)}, {len(second)}"
        )
    diff = [a - b for a, b in zip(first, second, strict=True)]
    if diff[0] > 0:
        return float(lengths[0])
    for i in range(1, len(diff)):
        if diff[i] > 0 >= diff[i - 1]:
            frac = -diff[i - 1] / (diff[i] - diff[i - 1])
            return float(lengths[i - 1] + frac * (lengths[i] - lengths[i - 1]))
    return None


# ----------------------------------------------------------------------------- torch.profiler
@dataclass
class OpStat:
    """One ATen operator's share of a profiled call (self CPU time, not children's)."""

    name: str
    self_cpu_ms: float
    calls: int


@contextlib.contextmanager
def _silence_native_stderr():
    """Send file descriptor 2 to /dev/null: the profiler's C++ side prints start/stop lines
    there, which Python's ``redirect_stderr`` cannot catch."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def top_ops(fn: Callable[[], Any], limit: int = 8, warmup: int = 1) -> list[OpStat]:
    """Run ``fn()`` once under ``torch.profiler`` (after ``warmup`` untimed calls) and return
    the ``limit`` operators with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for _ in range(warmup):
            fn()
        with _silence_native_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
    stats = [OpStat(e.key, e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()]
    stats.sort(key=lambda s: -s.self_cpu_ms)
    return stats[:limit]
