"""Checkers for notebook 08's exercises.

The ``llama`` piece (exercise 08.2) is checked part by part against transformers' own
Llama modules (``LlamaRMSNorm``, ``LlamaMLP``, ``LlamaDecoderLayer`` with random weights),
the decoding loop against a small instrumented stand-in model (every call it receives is
recorded, so a loop that re-feeds the prompt or resets positions is named), and then
``check_llama`` assembles the learner's blocks into SmolLM2-135M, loads its weights and
compares logits and greedy ids with the real model and ``generate()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import LlamaConfig

from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb08 as solutions


def _llama_configs() -> list[LlamaConfig]:
    """SmolLM2-135M, a Llama-2-7B-like shape, and a tiny untied config."""
    return [
        LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True),
        LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
        LlamaConfig(vocab_size=100, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False),
    ]


def check_kv_cache_bytes(kv_cache_bytes: Callable[..., int]) -> CheckResult:
    """``kv_cache_bytes(config, seq_len, batch=1, bytes_per_value=4)`` -> int bytes."""
    configs = _llama_configs()
    cases = [((configs[0], 256), {}), ((configs[1], 4096), {"bytes_per_value": 2}),
             ((configs[2], 10), {"batch": 3})]

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, int):
            return f"returned {type(got).__name__}, expected an int number of bytes"
        if got == expected:
            return None
        config = args[0]
        if got * 2 == expected:
            return f"got {got}, expected {expected}: half: the cache holds keys AND values"
        ratio = config.num_attention_heads // config.num_key_value_heads
        if ratio > 1 and got == expected * ratio:
            return (f"got {got}, expected {expected}: {ratio}× too big: with grouped-query "
                    "attention only num_key_value_heads heads are cached")
        if got * config.num_hidden_layers == expected:
            return f"got {got}, expected {expected}: every layer has its own cache"
        return f"got {got}, expected {expected}"

    return run_check("kv_cache_bytes", kv_cache_bytes, solutions.kv_cache_bytes, cases, diagnose,
                     hint=True)


def check_llama_param_count(llama_param_count: Callable[[LlamaConfig], int]) -> CheckResult:
    """``llama_param_count(config)`` -> parameters of ``LlamaForCausalLM(config)``."""
    configs = _llama_configs()

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, int):
            return f"returned {type(got).__name__}, expected an int"
        if got == expected:
            return None
        config = args[0]
        d, vocab = config.hidden_size, config.vocab_size
        if config.tie_word_embeddings and got == expected + vocab * d:
            return f"got {got:,}, expected {expected:,}: the LM head is tied to the embeddings"
        if not config.tie_word_embeddings and got == expected - vocab * d:
            return f"got {got:,}, expected {expected:,}: this config does not tie the LM head"
        head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
        extra_kv = 2 * d * (config.num_attention_heads - config.num_key_value_heads) * head_dim
        if extra_kv and got == expected + config.num_hidden_layers * extra_kv:
            return (f"got {got:,}, expected {expected:,}: k_proj and v_proj have "
                    "num_key_value_heads heads, not num_attention_heads")
        norms = (2 * config.num_hidden_layers + 1) * d
        if got == expected - norms:
            return f"got {got:,}, expected {expected:,}: {norms:,} short: the RMSNorm weights"
        return f"got {got:,}, expected {expected:,} (off by {got - expected:+,})"

    return run_check("llama_param_count", llama_param_count, solutions.llama_param_count,
                     [((c,), {}) for c in configs], diagnose,
                     hint=True)


def check_patchify(patchify: Callable[[torch.Tensor, int], torch.Tensor]) -> CheckResult:
    """``patchify(images, patch_size)`` -> ``(B, N, C·p·p)`` in Conv2d weight order."""
    generator = torch.Generator().manual_seed(0)
    cases = [((torch.rand(2, 3, 8, 8, generator=generator), 4), {}),
             ((torch.rand(1, 3, 6, 12, generator=generator), 3), {}),
             ((torch.rand(1, 1, 4, 4, generator=generator), 2), {})]

    def diagnose(got, expected, args, kwargs):
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} = (B, N, C·p·p)"
        if torch.equal(got, expected):
            return None
        images, p = args
        B, C, H, W = images.shape
        channels_last = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        if torch.equal(got, channels_last.reshape(B, -1, C * p * p)):
            return "the values are in (p, p, C) order; Conv2d weights flatten as (C, p, p)"
        column_major = images.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5)
        if torch.equal(got, column_major.reshape(B, -1, C * p * p)):
            return "patches go column by column; expected row-major (left to right, then down)"
        if torch.equal(got.sort(-1).values, expected.sort(-1).values):
            return "each row has the right pixels in the wrong order inside the patch"
        return "the rows are not the image's p×p patches in row-major order"

    return run_check("patchify", patchify, solutions.patchify, cases, diagnose,
                     hint=True)


# --------------------------------------------------------------------------------------
# Exercise 08.2, the llama piece: RMSNorm, SwiGLU, LlamaBlock, generate_greedy
# --------------------------------------------------------------------------------------


def _close(a, b, atol: float = 1e-5) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and bool(torch.allclose(a, b, atol=atol, rtol=0)))


def _tensor_problem(got, expected) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"returned {type(got).__name__}, expected a torch.Tensor"
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)} (the input's)"
    return None


def _run_piece(name: str, learner_obj, reference_obj, make: Callable, oracle: Callable,
               cases: list, diagnose: Callable, verbose: bool = True,
               timeout_s: float = 10.0) -> CheckResult:
    """``run_check`` on ``make(learner_obj)`` against ``oracle`` (transformers' own module).

    In an unattended run (``COURSE_FILL_SOLUTIONS=1``) a stub is replaced by the reference
    *piece*, which is then judged against the same oracle (run_check alone would put the
    oracle in its place and compare it with itself).
    """
    return run_check(name, make(learner_obj), oracle, cases, diagnose, verbose=verbose,
                     timeout_s=timeout_s, solution_fn=make(reference_obj))



def _hf_rms_norm(dim: int, eps: float, weight: torch.Tensor):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(dim, eps=eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm


def _rms_norm_cases() -> list[tuple[tuple, dict]]:
    gen = torch.Generator().manual_seed(0)
    cases = []
    # offset inputs (a mean to subtract), a tiny-scale input with a large eps (where eps
    # placement shows), and SmolLM2's width
    for shape, scale, offset, eps in (((2, 5, 16), 2.0, 1.5, 1e-6), ((1, 4, 8), 0.01, 0.0, 1e-2),
                                      ((1, 3, 576), 1.0, 0.3, 1e-5)):
        x = torch.randn(shape, generator=gen) * scale + offset
        weight = torch.rand(shape[-1], generator=gen) + 0.5
        cases.append(((x, weight, eps), {}))
    return cases


def _build_norm(RMSNorm, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    norm = RMSNorm(x.shape[-1], eps)
    if not isinstance(getattr(norm, "weight", None), torch.Tensor) or norm.weight.shape != weight.shape:
        raise ValueError(f"RMSNorm({x.shape[-1]}, eps) needs a parameter `weight` of shape "
                         f"({x.shape[-1]},), the name HF uses")
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def check_rms_norm(RMSNorm: type, verbose: bool = True) -> CheckResult:
    """``RMSNorm(dim, eps)`` with ``weight`` ``(dim,)`` equals transformers' ``LlamaRMSNorm``."""

    def make(cls):
        return lambda x, weight, eps: _build_norm(cls, x, weight, eps)

    def reference(x, weight, eps):
        with torch.no_grad():
            return _hf_rms_norm(x.shape[-1], eps, weight)(x)

    def diagnose(got, expected, args, kwargs):
        problem = _tensor_problem(got, expected)
        if problem:
            return problem
        if _close(got, expected):
            return None
        x, w, eps = args
        ms = x.pow(2).mean(-1, keepdim=True)
        if _close(got, F.layer_norm(x, x.shape[-1:], eps=eps) * w):
            return ("you subtracted the mean (that is LayerNorm): RMSNorm divides x by its root "
                    "mean square without centring it")
        if _close(got, x / (ms.sqrt() + eps) * w):
            return "eps goes inside the square root: sqrt(mean(x²) + eps)"
        if _close(got, x * torch.rsqrt(ms + eps)):
            return "normalised correctly, but forgot to multiply by weight"
        if _close(got, x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w):
            return "divided by the L2 norm (a sum of squares): RMS is the *mean* of the squares"
        for default in (1e-5, 1e-6, 1e-8, 0.0):
            if default != eps and _close(got, x * torch.rsqrt(ms + default) * w):
                return f"the eps argument ({eps:g}) is ignored: use the eps given to __init__"
        for dim in range(x.dim() - 1):
            if _close(got, x * torch.rsqrt(x.pow(2).mean(dim, keepdim=True) + eps) * w):
                return ("statistics over the wrong axis: each token's vector is normalised on its "
                        "own (the last dimension)")
        return f"values differ from LlamaRMSNorm by up to {(got - expected).abs().max().item():.3g}"

    return _run_piece("RMSNorm", RMSNorm, solutions.RMSNorm, make, reference, _rms_norm_cases(),
                      diagnose, verbose)


def _tiny_config(**overrides) -> LlamaConfig:
    """A small Llama config (9/3-style GQA, θ = 100 000 as SmolLM2) with eager attention."""
    settings = dict(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                    num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                    attn_implementation="eager")
    settings.update(overrides)
    return LlamaConfig(**settings)


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights large enough that every slip shows (norm weights around 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            else:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
    return module.eval()


def _load(module: torch.nn.Module, source: torch.nn.Module, what: str, names: str) -> None:
    try:
        module.load_state_dict(source.state_dict())
    except (RuntimeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0][:300]
        raise ValueError(f"could not load {what}'s weights into yours ({first}); expected "
                         f"submodules {names}") from None


def check_swiglu(SwiGLU: type, verbose: bool = True) -> CheckResult:
    """``SwiGLU(d_model, d_ff)`` with HF's names equals transformers' ``LlamaMLP``."""
    from transformers.models.llama.modeling_llama import LlamaMLP

    gen = torch.Generator().manual_seed(1)
    cases = []
    for seed, (d, f, shape) in enumerate(((48, 96, (2, 5, 48)), (24, 40, (1, 3, 24)))):
        mlp = _randomise(LlamaMLP(_tiny_config(hidden_size=d, intermediate_size=f)), seed)
        cases.append(((mlp, torch.randn(shape, generator=gen)), {}))

    def make(cls):
        def learner(mlp, x):
            mine = cls(mlp.hidden_size, mlp.intermediate_size)
            _load(mine, mlp, "LlamaMLP", "gate_proj, up_proj, down_proj (nn.Linear, bias=False)")
            with torch.no_grad():
                return mine(x)
        return learner

    def reference(mlp, x):
        with torch.no_grad():
            return mlp(x)

    def diagnose(got, expected, args, kwargs):
        problem = _tensor_problem(got, expected)
        if problem:
            return problem
        if _close(got, expected):
            return None
        mlp, x = args
        gate, up, down = mlp.gate_proj(x), mlp.up_proj(x), mlp.down_proj
        with torch.no_grad():
            variants = [
                (down(gate * F.silu(up)), "SiLU is on the wrong branch: it gates gate_proj's output, "
                                          "and up_proj's output is multiplied in unchanged"),
                (down(gate * up), "no activation: the gate branch goes through SiLU"),
                (down(F.gelu(gate) * up), "that's GELU: Llama's gate uses SiLU (x·sigmoid(x))"),
                (down(F.relu(gate) * up), "that's ReLU: Llama's gate uses SiLU (x·sigmoid(x))"),
                (down(F.silu(gate * up)), "SiLU goes on the gate branch before the product, not after"),
                (down(F.silu(gate) + up), "the two branches are multiplied element-wise, not added"),
            ]
        for value, words in variants:
            if _close(got, value):
                return words
        return f"values differ from LlamaMLP by up to {(got - expected).abs().max().item():.3g}"

    return _run_piece("SwiGLU", SwiGLU, solutions.SwiGLU, make, reference, cases, diagnose, verbose)


class _BlockRun:
    """What one block call produced: output, the returned cache, and the module (or None)."""

    def __init__(self, out, kv, block=None) -> None:
        self.out, self.kv, self.block = out, kv, block


def _causal(T: int, past: int = 0) -> torch.Tensor:
    """(T, past + T) bool: query i (absolute position past + i) sees keys 0 .. past + i."""
    return torch.arange(past + T)[None, :] <= (past + torch.arange(T))[:, None]


def _hf_block(layer, x, positions):
    """HF decoder layer on x (B, T, C) at ``positions``; additive causal mask over its own T."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    B, T, _ = x.shape
    rotary = LlamaRotaryEmbedding(layer.self_attn.config)
    position_ids = positions[None].expand(B, -1)
    additive = torch.zeros(T, T).masked_fill(~_causal(T), float("-inf"))[None, None].expand(B, 1, T, T)
    with torch.no_grad():
        return layer(x, attention_mask=additive, position_ids=position_ids,
                     position_embeddings=rotary(x, position_ids))


def _block_cases():
    gen = torch.Generator().manual_seed(2)
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    layer = _randomise(LlamaDecoderLayer(_tiny_config(), 0), 3)
    cases = [((layer, torch.randn(1, 6, 48, generator=gen), "full"), {}),
             ((layer, torch.randn(2, 5, 48, generator=gen), "full"), {}),
             ((layer, torch.randn(1, 5, 48, generator=gen), "cached"), {})]
    return cases


def check_llama_block(LlamaBlock: type, verbose: bool = True) -> CheckResult:
    """``LlamaBlock(d, H, KV, ff, eps, rope_base)`` equals a ``LlamaDecoderLayer`` (random weights).

    Cases: the whole sequence with a causal mask (batch 1 and 2), and a cached step: the
    first T - 1 positions, then the last one with ``past_kv``, against the full layer's last row.
    """

    def build(layer, cls):
        c = layer.self_attn.config
        block = cls(c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
                           c.intermediate_size, c.rms_norm_eps, c.rope_parameters["rope_theta"])
        _load(block, layer, "LlamaDecoderLayer",
              "input_layernorm, self_attn (your GroupedQueryAttention), post_attention_layernorm, mlp")
        return block.eval()

    def make(cls):
        def learner(layer, x, mode):
            block = build(layer, cls)
            T = x.shape[1]
            with torch.no_grad():
                if mode == "full":
                    out, kv = block(x, torch.arange(T), _causal(T))
                else:
                    _, past = block(x[:, :-1], torch.arange(T - 1), _causal(T - 1))
                    out, kv = block(x[:, -1:], torch.tensor([T - 1]), _causal(1, T - 1), past)
            return _BlockRun(out, kv, block)
        return learner

    def reference(layer, x, mode):
        out = _hf_block(layer, x, torch.arange(x.shape[1]))
        return _BlockRun(out if mode == "full" else out[:, -1:], None)

    def diagnose(got, expected, args, kwargs):
        layer, x, mode = args
        if not isinstance(got.out, torch.Tensor) or not isinstance(got.kv, tuple | list) or len(got.kv) != 2:
            return "forward must return (x, (k, v)): the new stream and the layer's cache from self_attn"
        problem = _tensor_problem(got.out, expected.out)
        if problem:
            return problem
        c = layer.self_attn.config
        B, T = x.shape[0], x.shape[1]
        kv_shape = (B, c.num_key_value_heads, T, c.head_dim)
        if tuple(got.kv[0].shape) != kv_shape:
            return (f"the returned k has shape {tuple(got.kv[0].shape)}, expected {kv_shape} "
                    "= (B, KV heads, all positions so far, head_dim)")
        if _close(got.out, expected.out, atol=1e-4):
            return None
        # Is the learner's attention (piece gqa) itself right?
        block = got.block
        T_run = T if mode == "full" else T
        full_x = x
        with torch.no_grad():
            h = layer.input_layernorm(full_x)
            mine, _ = block.self_attn(h, torch.arange(T_run), _causal(T_run))
            attn_only = _hf_attention(layer, h)
        if not _close(mine, attn_only, atol=1e-4):
            return ("your GroupedQueryAttention (piece `gqa`, notebook 05) differs from Llama's "
                    "attention on the same input: fix it there first")
        if mode == "cached":
            with torch.no_grad():
                whole, _ = block(x, torch.arange(T), _causal(T))
            if not _close(whole, _hf_block(layer, x, torch.arange(T)), atol=1e-4):
                return "wrong on the whole sequence already (see the other cases)"
            return ("the whole sequence is right but the cached step is not: pass past_kv on to "
                    "self_attn (it concatenates the cached keys/values) and return its new (k, v)")
        with torch.no_grad():
            n1, n2, mlp = layer.input_layernorm, layer.post_attention_layernorm, layer.mlp

            def attn(t):
                return _hf_attention(layer, t)

            x1 = n1(x + attn(x))
            h1 = x + attn(n1(x))
            variants = [
                (n2(x1 + mlp(x1)), "norm after the add (post-norm, BERT's wiring): Llama is pre-norm, "
                                   "x + sublayer(norm(x)), and the stream itself is never normalised"),
                (mlp(n2(attn(n1(x)))), "no residual connections: add each sublayer's output back to x"),
                (n1(x) + attn(n1(x)) + mlp(n2(n1(x) + attn(n1(x)))),
                 "the residual carries norm(x) instead of x: add the sublayer's output to the "
                 "un-normalised stream"),
                (x + attn(n1(x)) + mlp(n2(x)), "the MLP must read the stream *after* the attention "
                                              "update (x + attention(...)), not the block's input"),
                (h1 + mlp(n1(h1)), "the MLP's norm is post_attention_layernorm, not input_layernorm"),
                (h1 + mlp(h1), "the MLP reads post_attention_layernorm(x), not x"),
            ]
        for value, words in variants:
            if _close(got.out, value, atol=1e-4):
                return words
        return f"values differ from LlamaDecoderLayer by up to {(got.out - expected.out).abs().max().item():.3g}"

    return _run_piece("LlamaBlock", LlamaBlock, solutions.LlamaBlock, make, reference, _block_cases(),
                      diagnose, verbose)


def _hf_attention(layer, h: torch.Tensor) -> torch.Tensor:
    """HF LlamaAttention of ``layer`` on the normalised input h (B, T, C), causal, positions 0..T-1."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    B, T, _ = h.shape
    position_ids = torch.arange(T)[None].expand(B, -1)
    additive = torch.zeros(T, T).masked_fill(~_causal(T), float("-inf"))[None, None].expand(B, 1, T, T)
    rotary = LlamaRotaryEmbedding(layer.self_attn.config)
    with torch.no_grad():
        out, _ = layer.self_attn(h, attention_mask=additive, position_ids=position_ids,
                                 position_embeddings=rotary(h, position_ids))
    return out


class _RecordingLM:
    """A stand-in language model for ``generate_greedy``: it records every call.

    Its cache ``past`` holds the (position, token) pairs seen so far; the next token depends
    on all of them, so a loop that loses the cache, re-feeds tokens or gets a position wrong
    produces other tokens, and the call log says which of these happened.
    """

    def __init__(self, vocab: int = 97) -> None:
        self.vocab = vocab
        self.calls: list[tuple[list[int], list[int], int | None]] = []

    def reset(self) -> None:
        self.calls = []

    def __call__(self, ids, positions, past):
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != 1:
            raise ValueError(f"step expects ids as a (1, T) LongTensor, got "
                             f"{tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__}")
        positions = torch.as_tensor(positions)
        if positions.shape != (ids.shape[1],):
            raise ValueError(f"step expects positions of shape (T,) = ({ids.shape[1]},), got "
                             f"{tuple(positions.shape)}")
        seen = list(past[0]) if past is not None else []
        self.calls.append((ids[0].tolist(), positions.tolist(), None if past is None else len(seen)))
        logits = torch.zeros(1, ids.shape[1], self.vocab)
        for t, (token, pos) in enumerate(zip(ids[0].tolist(), positions.tolist(), strict=True)):
            seen.append((pos, token))
            score = sum((p + 1) * (tok + 3) for p, tok in seen) + 7 * len(seen)
            logits[0, t, score % self.vocab] = 1.0
        return logits, [tuple(seen)]


def check_generate_greedy(generate_greedy: Callable, verbose: bool = True) -> CheckResult:
    """``generate_greedy(step, prompt_ids, max_new_tokens, eos_id)`` prefills once, then one token per step."""
    lm = _RecordingLM()
    prompts = [[5, 17, 2, 40], [11, 3, 8, 23, 60, 1, 9]]
    plain = solutions.generate_greedy(lm, prompts[1], 8)
    eos = next(t for i, t in enumerate(plain) if i >= 2 and t not in plain[:i])
    cases = [((lm, prompts[0], 6, None), {}), ((lm, prompts[1], 8, eos), {}), ((lm, [42], 3, None), {})]

    def reference(step, prompt, n, eos_id):
        step.reset()
        new = solutions.generate_greedy(step, prompt, n, eos_id)
        step.reset()  # the learner's call log starts empty
        return new

    def make(fn):
        return lambda step, prompt, n, eos_id: fn(step, prompt, n, eos_id)

    def diagnose(got, expected, args, kwargs):
        step, prompt, n, eos_id = args
        calls = step.calls
        if isinstance(got, torch.Tensor):
            got = got.flatten().tolist()
        if not isinstance(got, list | tuple) or not all(isinstance(t, int) for t in got):
            return f"returned {type(got).__name__}, expected a list of ints (the new token ids)"
        got = list(got)
        if got == expected:
            if len(calls) > len(expected) + 1:
                return f"right tokens, but {len(calls)} model calls for {len(expected)} tokens: one per token"
            return None
        if got[: len(prompt)] == list(prompt) and got[len(prompt):] == expected:
            return "returned the prompt too: return only the new ids"
        if not calls:
            return "the step function was never called"
        first_ids, first_pos, first_past = calls[0]
        if first_past is not None or first_ids != list(prompt) or first_pos != list(range(len(prompt))):
            return (f"the first call must run the whole prompt once (prefill): ids = the {len(prompt)} "
                    f"prompt tokens, positions 0..{len(prompt) - 1}, past=None; got {len(first_ids)} ids "
                    f"at positions {first_pos[:6]}, past {'None' if first_past is None else 'given'}")
        for index, (ids, positions, past) in enumerate(calls[1:]):
            if past is None:
                return ("the cache is not used: each step after the prefill must pass the `past` "
                        "that the previous step returned")
            if len(ids) > 1:
                return (f"call {index + 2} fed {len(ids)} tokens: after the prefill feed only the newest "
                        "token (the cache already holds the prompt; re-feeding it counts it twice)")
            want = len(prompt) + index
            if positions != [want]:
                hint = " (positions reset to 0?)" if positions == [0] else ""
                return (f"positions not advanced: the token fed at step {index + 1} sits at position "
                        f"{want} (prompt length + step), got {positions}{hint}")
        if eos_id is not None and expected and expected[-1] == eos_id and len(got) > len(expected) \
                and got[: len(expected)] == expected:
            return "did not stop at eos_id: stop right after emitting it (and keep it in the output)"
        if eos_id is not None and got == expected[:-1]:
            return "stopped before eos_id: the end-of-text token is part of the output"
        if len(got) != len(expected):
            return f"returned {len(got)} new tokens, expected {len(expected)}"
        wrong = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        return (f"token {wrong} differs ({got[wrong]} vs {expected[wrong]}): take the argmax of the "
                "*last* position's logits")

    return _run_piece("generate_greedy", generate_greedy, solutions.generate_greedy, make, reference,
                      cases, diagnose, verbose)


@contextlib.contextmanager
def _skip_default_init():
    """Build modules without their random initialisation (the real weights overwrite it)."""
    saved = [(cls, cls.reset_parameters) for cls in (torch.nn.Linear, torch.nn.Embedding)]
    for cls, _ in saved:
        cls.reset_parameters = lambda self: None
    try:
        yield
    finally:
        for cls, method in saved:
            cls.reset_parameters = method


class _LearnerLlama:
    """embed -> the learner's LlamaBlocks -> the learner's RMSNorm -> tied head (course code)."""

    def __init__(self, LlamaBlock: type, RMSNorm: type, model) -> None:
        config = model.config
        base = model.model
        rope = getattr(config, "rope_parameters", None) or {}
        theta = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if head_dim * config.num_attention_heads != config.hidden_size:
            raise ValueError("the llama piece assumes head_dim = d_model // n_heads")
        self.layers = []
        for layer in base.layers:
            with _skip_default_init():  # 30 random inits would cost seconds
                block = LlamaBlock(config.hidden_size, config.num_attention_heads,
                                   config.num_key_value_heads, config.intermediate_size,
                                   config.rms_norm_eps, theta)
            _load(block, layer, "SmolLM2's decoder layer",
                  "input_layernorm, self_attn, post_attention_layernorm, mlp")
            self.layers.append(block.eval())
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        _load(self.norm, base.norm, "SmolLM2's final norm", "weight")
        self.embed = base.embed_tokens.weight
        self.head = model.lm_head.weight  # tied to the embeddings in SmolLM2

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, past: list | None = None):
        """ids (1, T), positions (T,) -> (logits (1, T, V), past: per layer (k, v))."""
        T = ids.shape[1]
        seen = 0 if past is None else past[0][0].shape[2]
        mask = torch.arange(seen + T)[None, :] <= positions[:, None]  # (T, T_total): causal
        x = self.embed[ids]  # (1, T, C)
        new_past = []
        for index, layer in enumerate(self.layers):
            x, kv = layer(x, positions, mask, None if past is None else past[index])
            new_past.append(kv)
        return self.norm(x) @ self.head.T, new_past


_REFERENCE_IDS: dict[tuple, list[int]] = {}


def _generate_reference(model, prompt: list[int], n: int, eos: int | None) -> list[int]:
    key = (id(model), tuple(prompt), n, eos)
    if key not in _REFERENCE_IDS:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 do_sample=False, eos_token_id=eos, pad_token_id=eos)
        _REFERENCE_IDS[key] = out[0, len(prompt):].tolist()
    return _REFERENCE_IDS[key]


LLAMA_NAMES = ("RMSNorm", "SwiGLU", "LlamaBlock", "generate_greedy")


def check_llama(pieces, model=None, prompt_ids=None, max_new_tokens: int = 16, tolerance: float = 1e-4,
                cache_tolerance: float = 1e-3, expected_ids=None, verbose: bool = True) -> CheckResult:
    """The whole ``llama`` piece: each part alone, then SmolLM2 built from your blocks.

    ``pieces``: a dict (or any object with attributes) holding ``RMSNorm``, ``SwiGLU``,
    ``LlamaBlock`` and ``generate_greedy``, e.g. ``{name: globals()[name] for name in LLAMA_NAMES}``.

    Parts: ``check_rms_norm``, ``check_swiglu``, ``check_llama_block``, ``check_generate_greedy``.
    Then the course assembles embed -> your 30 ``LlamaBlock``s -> your ``RMSNorm`` -> the tied
    head, loads SmolLM2's weights (``load_state_dict(layer.state_dict())``) and checks: logits
    on the prompt within ``tolerance`` (max |Δ|) of the model's; your ``generate_greedy`` on
    it gives ``model.generate(do_sample=False)``'s ids; and every cached step's logits equal
    one uncached forward over the whole sequence (within ``cache_tolerance``: a one-token step
    multiplies matrices of another shape, so float32 sums round differently, and 30 layers
    amplify that). ``expected_ids``: the new ids ``model.generate(do_sample=False)`` produced
    for this prompt and length, when the notebook has them already (computed here otherwise).
    """
    def get(name):
        value = pieces.get(name) if isinstance(pieces, dict) else getattr(pieces, name, None)
        if value is None:
            def missing(*args, **kwargs):
                raise NameError(f"{name} is not defined: run the exercise cell first")
            return missing
        return value

    RMSNorm, SwiGLU, LlamaBlock, generate_greedy = (get(name) for name in LLAMA_NAMES)
    parts = [check_rms_norm(RMSNorm, verbose), check_swiglu(SwiGLU, verbose),
             check_llama_block(LlamaBlock, verbose), check_generate_greedy(generate_greedy, verbose)]
    name = "SmolLM2 from your blocks"
    if not all(parts):
        attempted = not any("not attempted" in p.message for p in parts)
        mark = "✘" if attempted else "○"
        message = f"{mark} {name}: waits until the four parts above pass."
        if verbose:
            print(message)
        return CheckResult(name, False, 0, message, failures=[p.message for p in parts if not p])
    used = {p.name: p.used_reference for p in parts}
    Block = solutions.LlamaBlock if used["LlamaBlock"] else LlamaBlock
    Norm = solutions.RMSNorm if used["RMSNorm"] else RMSNorm
    generate = solutions.generate_greedy if used["generate_greedy"] else generate_greedy
    if model is None or prompt_ids is None:
        from course_utils.models import load_decoder

        loaded = load_decoder()
        model = loaded.model if model is None else model
        if prompt_ids is None:
            prompt_ids = loaded.tokenizer("The capital of France is")["input_ids"]
    model_type = getattr(model.config, "model_type", None)
    if model_type != "llama":
        message = (f"– {name}: skipped: the llama piece has Llama's layout (no biases, SwiGLU, RoPE); "
                   f"this decoder is {model_type!r}. The four parts above are checked all the same.")
        if verbose:
            print(message)
        return CheckResult(name, all(parts), 4, message)
    if isinstance(prompt_ids, torch.Tensor):
        prompt_ids = prompt_ids.flatten().tolist()
    prompt_ids = list(prompt_ids)
    eos = getattr(model.config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, list) else eos
    memo: dict[str, object] = {}

    def learner():
        if "run" not in memo:  # run_check calls it twice (probe + case): compute once
            mine = _LearnerLlama(Block, Norm, model)
            ids = torch.tensor([prompt_ids])
            prompt_logits, _ = mine(ids, torch.arange(len(prompt_ids)))
            steps = []

            def step(step_ids, positions, past):
                logits, past = mine(step_ids, torch.as_tensor(positions), past)
                steps.append(logits[0, -1])
                return logits, past

            new = generate(step, prompt_ids, max_new_tokens, eos)
            full_ids = torch.tensor([prompt_ids + list(new)[:-1]])
            full_logits, _ = mine(full_ids, torch.arange(full_ids.shape[1]))
            uncached = full_logits[0, len(prompt_ids) - 1:]  # the positions each step predicted from
            memo["run"] = (prompt_logits, list(new), torch.stack(steps[: len(new)]), uncached)
        return memo["run"]

    def reference():
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids])).logits
        if expected_ids is not None:
            return logits, [int(t) for t in torch.as_tensor(expected_ids).flatten().tolist()]
        return logits, _generate_reference(model, prompt_ids, max_new_tokens, eos)

    def diagnose(got, expected, args, kwargs):
        prompt_logits, new, cached, uncached = got
        model_logits, model_ids = expected
        gap = (prompt_logits - model_logits).abs().max().item()
        if gap > tolerance:
            return (f"prompt logits differ from SmolLM2's by up to {gap:.3g} (tolerance {tolerance:g}) "
                    "although the parts pass alone: does LlamaBlock pass eps and rope_base on to its "
                    "norms and attention?")
        if cached.shape != uncached.shape:
            return f"{cached.shape[0]} cached steps for {uncached.shape[0]} generated tokens"
        cache_gap = (cached - uncached).abs().max().item()
        if cache_gap > cache_tolerance:
            return (f"cached decoding differs from one uncached forward over the same tokens by "
                    f"{cache_gap:.3g}: the cache or the positions are off")
        if new != model_ids:
            return f"your greedy ids {new} differ from model.generate's {model_ids}"
        if verbose:
            print(f"  prompt logits max |Δ| = {gap:.1e} (≤ {tolerance:g}); cached vs uncached "
                  f"{cache_gap:.1e} (≤ {cache_tolerance:g}); {len(new)} greedy ids = model.generate's: True")
        return None

    return run_check(name, learner, reference, [((), {})], diagnose, hint=True, verbose=verbose,
                     timeout_s=300)
