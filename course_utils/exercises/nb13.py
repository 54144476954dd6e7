"""Used in notebook 13 (the capstone): the checker of ``MySmolLM2`` and the course code that
loads SmolLM2's checkpoint into it.

- ``load_smollm2_weights(my_model, hf_model)``: copies a ``LlamaForCausalLM``'s weights into
  a model with Hugging Face's submodule names (``embed_tokens``, ``layers.i.…``, ``norm``;
  the head is tied, so ``lm_head.weight`` is not copied), with a clear error naming what is
  missing, extra or of the wrong shape;
- ``check_my_smollm2(MySmolLM2, hf_model)``: the learner's class, built with SmolLM2's config
  cut to its first ``CHECK_LAYERS`` layers and loaded with those real weights, must give the
  logits of the real model cut the same way (``≤ LOGIT_TOLERANCE``), on a whole sequence, on
  a chunk of tokens after a cache, and on one decode step. Hooks on the learner's modules
  record what each layer received (positions, mask, cache) and whether the final norm ran,
  so the verdict says *which* part of the assembly is wrong.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from torch import nn

from course_utils.exercises import CheckResult
from course_utils.exercises.nb12 import run_against_course
from course_utils.solutions import nb13 as solutions

CHECK_LAYERS = 3
"""The checker runs SmolLM2 cut to its first layers: the same code path, a tenth of the time."""
LOGIT_TOLERANCE = 1e-4
SEQUENCE = 12  # tokens of the checked sequence
CHUNK_START = 7  # the "chunk" case caches 7 tokens, then feeds 5 at once
NAMES = ("embed_tokens", "layers", "norm", "lm_head")


class WeightLoadError(ValueError):
    """The learner's model does not have the parameter names or shapes of the checkpoint."""


def _hf_weights(hf_model: nn.Module, num_layers: int | None) -> dict[str, torch.Tensor]:
    """HF names without ``model.``; the tied ``lm_head.weight`` left out."""
    weights = {}
    for name, tensor in hf_model.state_dict().items():
        if not name.startswith("model.") or "rotary_emb" in name:
            continue  # lm_head.weight is embed_tokens.weight (tied); rotary buffers are recomputed
        key = name[len("model."):]
        if num_layers is not None and key.startswith("layers.") and int(key.split(".")[1]) >= num_layers:
            continue
        weights[key] = tensor
    return weights


def load_smollm2_weights(my_model: nn.Module, hf_model: nn.Module, num_layers: int | None = None) -> None:
    """Copy ``hf_model``'s (a ``LlamaForCausalLM``) weights into ``my_model`` in place.

    ``my_model``'s parameters must carry HF's names without the ``model.`` prefix
    (``embed_tokens.weight``, ``layers.0.self_attn.q_proj.weight``, …, ``norm.weight``);
    ``lm_head.weight`` is not copied (SmolLM2 ties it to ``embed_tokens``). ``num_layers``:
    copy only the first layers (for a model built with fewer layers). Raises
    :class:`WeightLoadError` naming the missing, unexpected or mis-shaped parameters.
    """
    source = _hf_weights(hf_model, num_layers)
    own = dict(my_model.named_parameters())  # tied parameters appear once, under their first name
    missing = sorted(k for k in own if k not in source and k != "lm_head.weight")
    unexpected = sorted(k for k in source if k not in own)
    shapes = sorted(f"{k}: yours {tuple(own[k].shape)}, checkpoint {tuple(source[k].shape)}"
                    for k in source if k in own and own[k].shape != source[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"your model has parameters the checkpoint lacks: {missing[:4]}")
        if unexpected:
            parts.append(f"checkpoint weights with no parameter of that name in your model: {unexpected[:4]}")
        if shapes:
            parts.append(f"shapes differ: {shapes[:3]}")
        raise WeightLoadError("; ".join(parts) + " (expected Hugging Face's names: embed_tokens, "
                              "layers.i.input_layernorm, layers.i.self_attn.q_proj, …, norm)")
    with torch.no_grad():
        for name, tensor in source.items():
            own[name].copy_(tensor)


def is_tied(my_model: nn.Module) -> bool:
    """True when the head and the token embedding are one matrix."""
    head, embedding = my_model.lm_head.weight, my_model.embed_tokens.weight
    return head is embedding or head.data_ptr() == embedding.data_ptr()


def _cut_config(config, num_layers: int):
    cut = copy.deepcopy(config)
    cut.num_hidden_layers = num_layers
    return cut


def _hf_logits(hf_model: nn.Module, ids: torch.Tensor, num_layers: int) -> torch.Tensor:
    """Logits ``(1, T, V)`` of the real model run through its first ``num_layers`` layers only."""
    full = hf_model.config.num_hidden_layers
    hf_model.config.num_hidden_layers = num_layers  # LlamaModel runs layers[:num_hidden_layers]
    try:
        with torch.no_grad():
            return hf_model(ids, use_cache=False).logits
    finally:
        hf_model.config.num_hidden_layers = full


@dataclass
class _Run:
    """What the learner's model did in one case."""

    problem: str | None = None
    logits: torch.Tensor | None = None
    layer_calls: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    norm_calls: int = 0
    past_in: Any = None
    positions: torch.Tensor | None = None
    cached: int = 0
    error: str | None = None  # the learner's model raised this
    prefill_calls: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    prefill_norms: int = 0


def _bind(layer: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """A layer's inputs by the contract's positions: x, positions, mask, past_kv."""
    try:
        bound = inspect.signature(layer.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        values = list(bound.arguments.values())
    except TypeError:
        values = list(args) + list(kwargs.values())
    values += [None] * (4 - len(values))
    return dict(zip(("x", "positions", "mask", "past_kv"), values[:4], strict=True))


def _check_output(output: Any, tokens: int, cached: int, config) -> str | None:
    if not isinstance(output, tuple | list) or len(output) != 2:
        return "forward must return a pair (logits, past)"
    logits, past = output
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (1, tokens, config.vocab_size):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        return f"logits of shape {shape}, expected (1, {tokens}, {config.vocab_size}) = (1, T, V)"
    if not isinstance(past, tuple | list) or len(past) != config.num_hidden_layers:
        n = len(past) if isinstance(past, tuple | list) else type(past).__name__
        return (f"past must hold one (k, v) per layer ({config.num_hidden_layers} for this config), "
                f"got {n}")
    head_dim = config.hidden_size // config.num_attention_heads
    want = (1, config.num_key_value_heads, cached + tokens, head_dim)
    for i, kv in enumerate(past):
        if not isinstance(kv, tuple | list) or len(kv) != 2 or any(
                not isinstance(t, torch.Tensor) or tuple(t.shape) != want for t in kv):
            shapes = [tuple(t.shape) for t in kv] if isinstance(kv, tuple | list) else type(kv).__name__
            return (f"past[{i}] must be (k, v), each {want} = (1, KV, cached + T, head_dim) after "
                    f"{cached} cached and {tokens} new tokens; got {shapes}")
    return None


def _runner(cls: type, hf_model: nn.Module, ids: torch.Tensor) -> Callable[[str], _Run]:
    config = _cut_config(hf_model.config, CHECK_LAYERS)
    built: dict[str, nn.Module] = {}

    def build() -> nn.Module | str:
        if "model" in built:
            return built["model"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            my = cls(config)  # NotImplementedError (a stub) propagates: "not attempted"
        absent = [name for name in NAMES if not hasattr(my, name)]
        if absent:
            return (f"your model has no attribute {', '.join(absent)}: the contract names the "
                    "submodules embed_tokens, layers, norm and lm_head")
        if not isinstance(my.layers, nn.ModuleList) or len(my.layers) != CHECK_LAYERS:
            n = len(my.layers) if hasattr(my.layers, "__len__") else type(my.layers).__name__
            return (f"self.layers holds {n} blocks for a config with num_hidden_layers = "
                    f"{CHECK_LAYERS}: build one LlamaBlock per layer in an nn.ModuleList")
        if not is_tied(my):
            return ("lm_head is not tied to embed_tokens: SmolLM2 uses one matrix for both "
                    "(tie_word_embeddings=True), so its checkpoint has no separate head and yours "
                    "keeps its random initialisation; make the head's weight the embedding's")
        try:
            load_smollm2_weights(my, hf_model, CHECK_LAYERS)
        except WeightLoadError as error:
            return f"the checkpoint does not load: {error}"
        my.eval()
        built["model"] = my
        return my

    def run(case: str) -> _Run:
        my = build()
        if isinstance(my, str):
            return _Run(problem=my)
        cached = {"full": 0, "chunk": CHUNK_START, "decode": SEQUENCE - 1}[case]
        record = _Run(cached=cached, positions=torch.arange(cached, SEQUENCE))
        calls: list[tuple[int, dict[str, Any]]] = []  # of the forward call running now
        norms = [0]

        def pre_hook(index):
            def hook(module, args, kwargs):
                calls.append((index, _bind(module, args, kwargs)))
            return hook

        def norm_hook(module, args, output):
            norms[0] += 1

        hooks = [layer.register_forward_pre_hook(pre_hook(index), with_kwargs=True)
                 for index, layer in enumerate(my.layers)]
        hooks.append(my.norm.register_forward_hook(norm_hook))
        try:
            with torch.no_grad():
                past = None
                if cached:
                    try:
                        output = my(ids[:, :cached], torch.arange(cached))
                    except (NotImplementedError, TimeoutError):
                        raise
                    except Exception as error:  # the learner's code: say where it broke
                        record.error = f"your model raised {type(error).__name__} on {cached} tokens: {error}"
                    record.prefill_calls, record.prefill_norms = list(calls), norms[0]
                    if record.error:
                        return record
                    problem = _check_output(output, cached, 0, config)
                    if problem:
                        record.problem = f"prefill of {cached} tokens: {problem}"
                        return record
                    past = output[1]
                    calls.clear()
                    norms[0] = 0
                record.past_in = past
                try:
                    output = my(ids[:, cached:], record.positions.clone(), past)
                except (NotImplementedError, TimeoutError):
                    raise
                except Exception as error:  # the learner's code: say where it broke
                    new = SEQUENCE - cached
                    what = (f"with {cached} cached tokens and {new} new token{'s' if new > 1 else ''}"
                            if cached else f"on {SEQUENCE} tokens")
                    record.error = f"your model raised {type(error).__name__} {what}: {error}"
        finally:
            for hook in hooks:
                hook.remove()
            record.layer_calls, record.norm_calls = list(calls), norms[0]
        if record.error:
            return record
        problem = _check_output(output, SEQUENCE - cached, cached, config)
        if problem:
            record.problem = problem
        else:
            record.logits = output[0]
        return record

    return run


def _expected_mask(tokens: int, cached: int) -> torch.Tensor:
    return torch.ones(tokens, cached + tokens, dtype=torch.bool).tril(diagonal=cached)


def _diagnose_mask(mask: Any, tokens: int, cached: int) -> str | None:
    expected = _expected_mask(tokens, cached)
    if mask is None:
        if tokens == 1:
            return None  # one new token may see every key
        return ("the layers got mask=None: without the causal mask every token also sees the "
                "tokens after it")
    try:
        got = torch.broadcast_to(torch.as_tensor(mask), expected.shape)
    except RuntimeError:
        if cached:
            return (f"the mask has shape {tuple(mask.shape)}, but {tokens} new tokens after {cached} "
                    f"cached ones have {cached + tokens} keys: it must be ({tokens}, {cached + tokens}), "
                    "each new token i sitting at position cached + i")
        return f"the mask has shape {tuple(mask.shape)}; expected ({tokens}, {tokens})"
    if got.dtype != torch.bool:
        return f"the mask is {got.dtype}; the contract's masks are boolean (True = may attend)"
    if torch.equal(got, expected):
        return None
    if torch.equal(got, ~expected):
        return "the mask is inverted: True must mean *may attend*"
    if cached and torch.equal(got, torch.ones_like(expected).tril()):
        return (f"the mask is not offset for the cache: with {cached} cached tokens, new token i sits "
                f"at position {cached} + i and may see every cached key and the new ones up to itself")
    return "the mask the layers got is not the causal mask (True on and below the diagonal)"


def _diagnose_calls(where: str, calls: list[tuple[int, dict[str, Any]]], norm_calls: int,
                    positions: torch.Tensor, cached: int, past_in: Any, finished: bool) -> str | None:
    """What the layers received in one forward call (``finished``: it returned)."""
    tokens = len(positions)
    order = [index for index, _ in calls]
    if finished and order != list(range(CHECK_LAYERS)):
        never = sorted(set(range(CHECK_LAYERS)) - set(order))
        if never:
            return f"{where}: layer(s) {never} never ran: run every block of self.layers"
        return (f"{where}: your layers ran in the order {order}: run them in the order of "
                "self.layers, 0, 1, 2, …")
    if not finished and order and order != list(range(len(order))):
        return f"{where}: your layers ran in the order {order}: run them in the order of self.layers"
    if finished and norm_calls == 0:
        return (f"{where}: the final norm (self.norm) never ran: SmolLM2 normalises the last "
                "hidden state before the head")
    for index, inputs in calls:
        given = inputs["positions"]
        if not isinstance(given, torch.Tensor) or not torch.equal(given.flatten().long(), positions):
            shown = given.tolist() if isinstance(given, torch.Tensor) else given
            return (f"{where}: layer {index} got positions {shown}, but forward was given "
                    f"{positions.tolist()}: pass the positions through (RoPE rotates each token "
                    "by its absolute position)")
        problem = _diagnose_mask(inputs["mask"], tokens, cached)
        if problem:
            return f"{where}: {problem}"
        if past_in is not None:
            past_kv = inputs["past_kv"]
            if past_kv is None:
                return (f"{where}: layer {index} got past_kv=None: pass each layer its own (k, v) "
                        "from past, or the new tokens see none of the cached ones")
            owner = [j for j, kv in enumerate(past_in)
                     if past_kv[0] is kv[0] or (past_kv[0].shape == kv[0].shape and torch.equal(past_kv[0], kv[0]))]
            if owner and index not in owner:
                return f"{where}: layer {index} got the cache of layer {owner[0]}: past[i] belongs to layer i"
    return None


def _variant_logits(hf_model: nn.Module, ids: torch.Tensor, **changes: Any) -> torch.Tensor:
    """Logits of the reference model built from a changed config (a typical slip)."""
    config = _cut_config(hf_model.config, CHECK_LAYERS)
    for name, value in changes.items():
        setattr(config, name, value)
    with torch.random.fork_rng(devices=[]):
        reference = solutions.MySmolLM2(config)
    load_smollm2_weights(reference, hf_model, CHECK_LAYERS)
    with torch.no_grad():
        return reference.eval()(ids, torch.arange(ids.shape[1]))[0]


def _diagnose(got: _Run, expected: torch.Tensor, args, kwargs, slips: Callable[[], dict] | None = None,
              ) -> str | None:
    (case,) = args
    if got.problem:
        return got.problem
    tokens = SEQUENCE - got.cached
    if got.cached:
        prefill_finished = not (got.error and not got.layer_calls and got.past_in is None)
        problem = _diagnose_calls(f"in the prefill of {got.cached} tokens", got.prefill_calls,
                                  got.prefill_norms, torch.arange(got.cached), 0, None, prefill_finished)
        if problem:
            return problem
    where = {"full": f"on {SEQUENCE} tokens", "chunk": f"{tokens} tokens after a cache of {got.cached}",
             "decode": f"one decode step after {got.cached} cached tokens"}[case]
    problem = _diagnose_calls(where, got.layer_calls, got.norm_calls, got.positions, got.cached,
                              got.past_in, finished=got.error is None)
    if problem:
        return problem
    if got.error:
        return got.error
    diff = float((got.logits - expected).abs().max())
    if diff <= LOGIT_TOLERANCE:
        return None
    for problem, logits in (slips() if slips else {}).items():
        if float((got.logits - logits[:, got.cached:]).abs().max()) <= LOGIT_TOLERANCE:
            return f"{where}: {problem}"
    return (f"{where}: logits differ from SmolLM2's (its first {CHECK_LAYERS} layers) by up to "
            f"{diff:.2e} (tolerance {LOGIT_TOLERANCE:g}): the blocks and the norm ran in the right "
            "order with the right inputs, so look at the embedding, the head and what goes between")


@cache
def _bundled_decoder() -> nn.Module:
    from course_utils.models import load_decoder

    return load_decoder().model


def check_my_smollm2(MySmolLM2: type, hf_model: nn.Module | None = None) -> CheckResult:
    """``MySmolLM2(config)``, cut to SmolLM2's first ``CHECK_LAYERS`` layers and loaded with
    their real weights, against the real model cut the same way: a whole sequence, a chunk
    after a cache, one decode step. ``hf_model``: the loaded SmolLM2 (``None``: load it)."""
    if hf_model is None:
        hf_model = _bundled_decoder()
    generator = torch.Generator().manual_seed(13)
    ids = torch.randint(hf_model.config.vocab_size, (1, SEQUENCE), generator=generator)
    full = _hf_logits(hf_model, ids, CHECK_LAYERS)  # (1, SEQUENCE, V): the oracle

    def oracle(case: str) -> torch.Tensor:
        cached = {"full": 0, "chunk": CHUNK_START, "decode": SEQUENCE - 1}[case]
        return full[:, cached:]

    slips: dict[str, torch.Tensor] = {}

    def typical_slips() -> dict[str, torch.Tensor]:  # computed once, only when logits differ
        if not slips:
            theta = hf_model.config.rope_parameters["rope_theta"]
            slips[f"RoPE used the base 10000, not SmolLM2's rope_theta = {theta:g}: read it from "
                  "config.rope_parameters[\"rope_theta\"] and pass it to every block"] = _variant_logits(
                hf_model, ids, rope_parameters={**hf_model.config.rope_parameters, "rope_theta": 10000.0})
        return slips

    def diagnose(got, expected, args, kwargs):
        return _diagnose(got, expected, args, kwargs, typical_slips)

    cases = [((case,), {}) for case in ("full", "chunk", "decode")]
    return run_against_course("MySmolLM2", MySmolLM2, solutions.MySmolLM2,
                              lambda cls: _runner(cls, hf_model, ids), oracle, cases, diagnose)
