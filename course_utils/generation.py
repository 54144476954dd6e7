"""Used in notebook 08: greedy decoding written by hand, then with a hand-written KV cache.

- ``greedy_generate(model, input_ids, n)``: the loop ``model.generate(do_sample=False)``
  runs, written out: run the model on the whole prefix, take the argmax of the last
  position's logits, append, repeat. No cache: every step recomputes every position.
- ``ScratchLlama``: a Llama-style decoder (SmolLM2, TinyLlama, ...) forward pass written
  from scratch on a ``LlamaForCausalLM``'s own weights (RMSNorm, RoPE, grouped-query
  attention, SwiGLU), with an explicit ``kv_cache.KVCache``: per layer, the keys and values of
  every position seen so far, grown by one row per generated token. RoPE is
  ``positional.apply_rope`` and RMSNorm is ``blocks.RMSNorm`` (sharing the model's weights).
- ``scratch_greedy(scratch, input_ids, n, use_cache)``: greedy decoding on ``ScratchLlama``,
  either recomputing the prefix each step or feeding only the newest token and reusing the
  cache. Both give the same tokens; the cache changes only the cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from course_utils.blocks import RMSNorm
from course_utils.kv_cache import KVCache
from course_utils.positional import apply_rope

__all__ = ["GenerationResult", "KVCache", "ScratchLlama", "greedy_generate", "scratch_greedy"]


def _check_input_ids(input_ids: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != 1:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise ValueError(f"input_ids must be a (1, T) tensor of token ids, got {shape}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: expected at least one prompt token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")


@dataclass
class GenerationResult:
    """Prompt + generated ids ``(1, T + n)``, and the time each step took (seconds)."""

    ids: torch.Tensor
    step_seconds: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(self.step_seconds)


@torch.no_grad()
def greedy_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | None = None,
) -> GenerationResult:
    """Greedy decoding without a cache: each step runs ``model`` on the whole prefix.

    ``input_ids`` is ``(1, T)``. Stops after ``max_new_tokens`` or right after emitting
    ``eos_token_id``, as ``model.generate(do_sample=False)`` does.
    """
    _check_input_ids(input_ids, max_new_tokens)
    ids = input_ids
    steps = []
    for _ in range(max_new_tokens):
        start = time.perf_counter()
        logits = model(input_ids=ids, use_cache=False).logits  # (1, T, V): every position
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1): only the last one is used
        ids = torch.cat([ids, next_id], dim=1)
        steps.append(time.perf_counter() - start)
        if eos_token_id is not None and next_id.item() == eos_token_id:
            break
    return GenerationResult(ids, steps)


class ScratchLlama:
    """A Llama decoder's forward pass from scratch, on a ``LlamaForCausalLM``'s weights.

    Only the weights are borrowed (no copy); everything the model computes is written
    here: embedding lookup, per layer RMSNorm -> q/k/v projections -> RoPE -> grouped-
    query causal attention (query head h reads KV head h // group) -> output projection
    -> residual -> RMSNorm -> SwiGLU MLP -> residual, then final RMSNorm and the LM head.
    """

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        if getattr(config, "model_type", None) != "llama":
            raise ValueError(
                "ScratchLlama re-implements Llama-style decoders (model_type 'llama', e.g. "
                f"SmolLM2); got model_type {getattr(config, 'model_type', None)!r}"
            )
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"only default RoPE is implemented, got {rope.get('rope_type')!r}")
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ValueError("biased attention/MLP projections are not implemented")
        self.model = model
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.group = self.n_heads // self.n_kv_heads  # query heads sharing one KV head
        self.rope_base = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
        self.n_layers = config.num_hidden_layers
        base = model.model
        # The course's RMSNorm, holding the model's own norm weights (shared, not copied).
        self.attn_norms = [self._norm(layer.input_layernorm.weight, config) for layer in base.layers]
        self.mlp_norms = [self._norm(layer.post_attention_layernorm.weight, config) for layer in base.layers]
        self.final_norm = self._norm(base.norm.weight, config)

    @staticmethod
    def _norm(weight: nn.Parameter, config) -> RMSNorm:
        norm = RMSNorm(weight.shape[0], eps=config.rms_norm_eps)
        norm.weight = weight
        return norm

    def new_cache(self) -> KVCache:
        return KVCache(self.n_layers)

    @torch.no_grad()
    def forward(
        self, input_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """Logits ``(B, T, vocab)`` for ``input_ids`` ``(B, T)`` (``(B, 1, vocab)`` if last_only).

        With a ``cache``, ``input_ids`` are the positions after the ``cache.length`` ones
        already cached: their keys/values are appended and they attend to everything cached.
        ``last_only`` skips the LM head for all but the last position (decoding needs no more).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        base = self.model.model
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        positions = torch.arange(past, past + T)
        x = base.embed_tokens.weight[input_ids]  # (B, T, C)
        # Query i (absolute position past + i) may see keys 0 .. past + i.
        allowed = torch.ones(T, past + T, dtype=torch.bool).tril(diagonal=past)  # (T, T_all)
        for index, layer in enumerate(base.layers):
            attn = layer.self_attn
            h = self.attn_norms[index](x)  # (B, T, C)
            q = (h @ attn.q_proj.weight.T).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = (h @ attn.k_proj.weight.T).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = (h @ attn.v_proj.weight.T).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
            q = apply_rope(q, positions, self.rope_base)  # (B, H, T, d)
            k = apply_rope(k, positions, self.rope_base)  # (B, Hkv, T, d)
            if cache is not None:
                k, v = cache.append(index, k, v)  # (B, Hkv, T_all, d): past + new positions
            # GQA: query head h reads KV head h // group -> repeat each KV head `group` times.
            k = k.repeat_interleave(self.group, dim=1)  # (B, H, T_all, d)
            v = v.repeat_interleave(self.group, dim=1)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, T_all)
            scores = scores.masked_fill(~allowed, float("-inf"))
            out = scores.softmax(dim=-1) @ v  # (B, H, T, d)
            out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
            x = x + out @ attn.o_proj.weight.T  # residual
            h = self.mlp_norms[index](x)
            mlp = layer.mlp
            gated = nn.functional.silu(h @ mlp.gate_proj.weight.T) * (h @ mlp.up_proj.weight.T)
            x = x + gated @ mlp.down_proj.weight.T  # residual
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        x = self.final_norm(x)
        return x @ self.model.lm_head.weight.T  # (B, T, vocab)

    __call__ = forward


@torch.no_grad()
def scratch_greedy(
    scratch: ScratchLlama,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    use_cache: bool = True,
    eos_token_id: int | None = None,
) -> GenerationResult:
    """Greedy decoding on ``ScratchLlama``, with or without the hand-written KV cache.

    Without the cache, step s runs all ``T + s`` positions; with it, the first step runs
    the prompt (filling the cache) and each later step runs only the newest token. Either
    way only the last position goes through the LM head, so the cache is the only difference.
    """
    _check_input_ids(input_ids, max_new_tokens)
    cache = scratch.new_cache() if use_cache else None
    ids, feed = input_ids, input_ids
    steps = []
    for _ in range(max_new_tokens):
        start = time.perf_counter()
        logits = scratch(feed if use_cache else ids, cache, last_only=True)  # (1, 1, V)
        next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1)
        ids = torch.cat([ids, next_id], dim=1)
        feed = next_id  # with a cache, the next step needs only the new token
        steps.append(time.perf_counter() - start)
        if eos_token_id is not None and next_id.item() == eos_token_id:
            break
    return GenerationResult(ids, steps)
