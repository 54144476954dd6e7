"""Used in notebooks 12, 14: inside a decoder — logit lens, activation patching, direct logit attribution,
and the induction circuit read from the weights — with hooks written from scratch.

Used in notebooks 12 (the induction circuit's weights) and 14 (SmolLM2 from the inside).

The residual stream view (Elhage et al., 2021, "A Mathematical Framework for Transformer
Circuits"): a pre-norm decoder layer *adds* its attention output and its MLP output to the
stream, so the last layer's output is the embedding plus the sum of every sublayer's output,
and each attention output is the sum of its heads' outputs (``o_proj`` applied to each head's
slice). Everything here uses only ``torch`` forward hooks on the Hugging Face Llama-layout
modules (``model.model.embed_tokens``, ``.layers[i].self_attn.o_proj``, ``.mlp``,
``model.model.norm``, ``model.lm_head``); no interpretability library.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

# --- the model's parts -------------------------------------------------------------------


def _decoder_parts(model: nn.Module) -> tuple[nn.Module, nn.ModuleList, nn.Module, nn.Module]:
    """``(embed_tokens, layers, final_norm, lm_head)`` of a Llama-layout causal LM."""
    body = getattr(model, "model", None)
    parts = (getattr(body, "embed_tokens", None), getattr(body, "layers", None),
             getattr(body, "norm", None), getattr(model, "get_output_embeddings", lambda: None)())
    if any(part is None for part in parts) or not hasattr(parts[1][0], "self_attn"):
        raise ValueError(
            "expected a Llama-layout causal LM (model.model.embed_tokens, .layers[i].self_attn, "
            f".norm, an output embedding), got {type(model).__name__}"
        )
    return parts


def _check_ids(input_ids: object) -> torch.Tensor:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != 1 \
            or input_ids.dtype != torch.long:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a LongTensor of shape (1, T), got {shape}")
    return input_ids


@contextlib.contextmanager
def hooks(*handles_factories: Callable[[], torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    """Register hooks for the duration of a ``with`` block; always removed afterwards."""
    handles = []
    try:
        for factory in handles_factories:
            handles.append(factory())
        yield
    finally:
        for handle in handles:
            handle.remove()


def _first(output):
    return output[0] if isinstance(output, tuple) else output


# --- the residual stream and the logit lens ------------------------------------------------


@dataclass
class Run:
    """One forward pass, recorded. Shapes: L layers, T tokens, C = d_model, H heads."""

    logits: torch.Tensor  # (T, V) the model's own logits
    resid: torch.Tensor  # (L + 1, T, C): the input of each layer, then the last layer's output
    attn_out: torch.Tensor  # (L, T, C) each layer's attention output (after o_proj)
    mlp_out: torch.Tensor  # (L, T, C) each layer's MLP output
    head_inputs: torch.Tensor  # (L, T, H, d_head) each head's output before o_proj (its "z")


@torch.no_grad()
def record(model: nn.Module, input_ids: torch.Tensor) -> Run:
    """Run the model once and record the residual stream and every sublayer's output."""
    _check_ids(input_ids)
    _, layers, _, _ = _decoder_parts(model)
    heads = model.config.num_attention_heads
    resid, attn_out, mlp_out, z = [], [], [], []

    def pre_layer(module, args, kwargs):
        resid.append((args[0] if args else kwargs["hidden_states"])[0].clone())

    def after_last(module, args, kwargs, output):
        resid.append(_first(output)[0].clone())

    def after_attn(module, args, output):
        attn_out.append(_first(output)[0].clone())

    def after_mlp(module, args, output):
        mlp_out.append(output[0].clone())

    def before_o(module, args):
        x = args[0][0]  # (T, H * d_head)
        z.append(x.reshape(x.shape[0], heads, -1).clone())

    factories = []
    for layer in layers:
        factories += [
            lambda layer=layer: layer.register_forward_pre_hook(pre_layer, with_kwargs=True),
            lambda layer=layer: layer.self_attn.register_forward_hook(after_attn),
            lambda layer=layer: layer.mlp.register_forward_hook(after_mlp),
            lambda layer=layer: layer.self_attn.o_proj.register_forward_pre_hook(before_o),
        ]
    factories.append(lambda: layers[-1].register_forward_hook(after_last, with_kwargs=True))
    with hooks(*factories):
        logits = model(input_ids=input_ids, use_cache=False).logits[0]
    return Run(logits, torch.stack(resid), torch.stack(attn_out), torch.stack(mlp_out), torch.stack(z))


@torch.no_grad()
def logit_lens(model: nn.Module, resid: torch.Tensor) -> torch.Tensor:
    """Decode every layer's residual stream as if it were the last: ``lm_head(norm(resid))``.

    ``resid`` is ``(L + 1, T, C)`` from :func:`record`; returns logits ``(L + 1, T, V)``. The
    last row is the model's own prediction (nostalgebraist, 2020, "interpreting GPT: the
    logit lens").
    """
    _, _, norm, lm_head = _decoder_parts(model)
    return lm_head(norm(resid))


# --- activation patching -------------------------------------------------------------------


def logit_difference(last_logits: torch.Tensor, good: int, bad: int) -> torch.Tensor:
    """``last_logits[..., good] - last_logits[..., bad]`` (logits at the answer position)."""
    return last_logits[..., good] - last_logits[..., bad]


def _causal_additive(batch: int, seq_len: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B, 1, T, T)`` additive mask: 0 where query i may see key j (j <= i), -inf-ish above."""
    blocked = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1)
    mask = torch.zeros(seq_len, seq_len, dtype=dtype).masked_fill(blocked, torch.finfo(dtype).min)
    return mask.expand(batch, 1, seq_len, seq_len)


@torch.no_grad()
def run_from(model: nn.Module, layer: int, hidden: torch.Tensor) -> torch.Tensor:
    """Last-position logits ``(B, V)`` of running layers ``layer..L-1`` on ``hidden`` ``(B, T, C)``,
    then the final norm and the unembedding.

    Patching layer ``l`` leaves layers below it unchanged, so a patched run only needs the
    layers from ``l`` on: about half the work of a full forward on average. ``layer == L``
    only applies the final norm and the unembedding.
    """
    _, layers, norm, lm_head = _decoder_parts(model)
    if not 0 <= layer <= len(layers):
        raise ValueError(f"layer must be in 0..{len(layers)}, got {layer}")
    batch, seq_len, _ = hidden.shape
    positions = torch.arange(seq_len, device=hidden.device)[None].expand(batch, -1)
    cos_sin = model.model.rotary_emb(hidden, positions)
    mask = _causal_additive(batch, seq_len, hidden.dtype)
    for block in layers[layer:]:
        hidden = _first(block(hidden, attention_mask=mask, position_embeddings=cos_sin, position_ids=positions))
    return lm_head(norm(hidden[:, -1]))  # (B, V)


@torch.no_grad()
def patch_residual(
    model: nn.Module, corrupted: Run, clean: Run, layers: list[int], positions: list[int]
) -> torch.Tensor:
    """Last-position logits ``(N, V)``: run ``i`` is the corrupted run with the residual stream
    at the *input* of layer ``layers[i]``, position ``positions[i]``, replaced by the clean one.

    ``layers[i] == L`` (one past the last layer) patches the last layer's output. Runs that
    patch the same layer go through the remaining layers as one batch.
    """
    n_layers = corrupted.resid.shape[0] - 1
    if len(layers) != len(positions) or not layers:
        raise ValueError(f"layers and positions must be equal-length, non-empty lists, got {len(layers)} "
                         f"and {len(positions)}")
    out = torch.empty(len(layers), corrupted.logits.shape[-1])
    for layer in sorted(set(layers)):
        if not 0 <= layer <= n_layers:
            raise ValueError(f"layers must be in 0..{n_layers}, got {layer}")
        rows = [row for row, value in enumerate(layers) if value == layer]
        hidden = corrupted.resid[layer].expand(len(rows), -1, -1).clone()  # (B, T, C)
        for batch_row, row in enumerate(rows):
            hidden[batch_row, positions[row]] = clean.resid[layer, positions[row]]
        out[rows] = run_from(model, layer, hidden)
    return out


@torch.no_grad()
def patch_heads(
    model: nn.Module, corrupted: Run, clean: Run, heads: list[tuple[int, int]],
    positions: slice | list[int] | None = None,
) -> torch.Tensor:
    """Last-position logits ``(N, V)``: run ``i`` is the corrupted run with head
    ``heads[i] = (layer, head)``'s output (its slice of ``o_proj``'s input) taken from the
    clean run at ``positions`` (default: every position)."""
    _, decoder_layers, _, _ = _decoder_parts(model)
    n_heads = model.config.num_attention_heads
    where = slice(None) if positions is None else positions
    out = torch.empty(len(heads), corrupted.logits.shape[-1])
    for layer in sorted({layer for layer, _ in heads}):
        rows = [row for row, (value, _) in enumerate(heads) if value == layer]

        def hook(module, args, rows=rows, layer=layer):
            x = args[0].clone()  # (B, T, H * d_head)
            view = x.view(x.shape[0], x.shape[1], n_heads, -1)
            for batch_row, row in enumerate(rows):
                head = heads[row][1]
                view[batch_row, where, head] = clean.head_inputs[layer, where, head]
            return (x, *args[1:])

        hidden = corrupted.resid[layer].expand(len(rows), -1, -1).clone()
        with hooks(lambda hook=hook, layer=layer: decoder_layers[layer].self_attn.o_proj.register_forward_pre_hook(hook)):
            out[rows] = run_from(model, layer, hidden)
    return out


def recovered(patched: torch.Tensor, clean: float, corrupted: float) -> torch.Tensor:
    """Fraction of the clean logit difference a patch restores: 0 = corrupted, 1 = clean."""
    return (patched - corrupted) / (clean - corrupted)


# --- direct logit attribution --------------------------------------------------------------


@dataclass
class Attribution:
    """Each component's direct contribution to one logit (or logit difference) at one position."""

    embedding: float
    heads: torch.Tensor  # (L, H)
    mlps: torch.Tensor  # (L,)
    total: float  # what the model's logit (difference) is

    def summed(self) -> float:
        return self.embedding + float(self.heads.sum()) + float(self.mlps.sum())


@torch.no_grad()
def direct_logit_attribution(model: nn.Module, run: Run, direction: torch.Tensor, position: int = -1) -> Attribution:
    """Project every component's output onto ``direction`` (a ``(C,)`` unembedding row, or
    the difference of two) through the final norm, *frozen* at this run's scale.

    RMSNorm is ``w ⊙ x / rms(x)``: with ``rms`` taken from the final residual stream (a
    scalar per position) it is linear in ``x``, so the final stream — embedding + Σ heads + Σ
    MLPs — splits into exact per-component terms: they sum to the model's logit. (A
    LayerNorm would also subtract the mean; this function requires RMSNorm without a bias.)
    """
    _, layers, norm, _ = _decoder_parts(model)
    if hasattr(norm, "bias") and getattr(norm, "bias", None) is not None:
        raise ValueError("direct_logit_attribution expects an RMSNorm final norm (no bias)")
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    final = run.resid[-1, position]  # (C,)
    scale = torch.rsqrt(final.pow(2).mean() + eps)  # 1 / rms
    readout = norm.weight * direction * scale  # (C,): the frozen linear map to the logit
    n_layers, n_heads = run.head_inputs.shape[0], run.head_inputs.shape[2]
    head_values = torch.zeros(n_layers, n_heads)
    for index, layer in enumerate(layers):
        w_o = layer.self_attn.o_proj.weight  # (C, H * d_head)
        d_head = w_o.shape[1] // n_heads
        z = run.head_inputs[index, position]  # (H, d_head)
        per_head = torch.einsum("chd,hd->hc", w_o.view(-1, n_heads, d_head), z)  # (H, C)
        head_values[index] = per_head @ readout
    mlps = run.mlp_out[:, position] @ readout  # (L,)
    embedding = float(run.resid[0, position] @ readout)
    total = float(norm(final) @ direction)
    return Attribution(embedding, head_values, mlps, total)


# --- circuits from the weights (Elhage et al., 2021) --------------------------------------


def head_weights(attention: nn.Module, head: int) -> dict[str, torch.Tensor]:
    """One head's ``W_Q, W_K, W_V`` ``(C, d_head)`` and ``W_O`` ``(d_head, C)`` (x @ W convention)
    from a module with ``q_proj, k_proj, v_proj`` and ``o_proj`` (or ``out_proj``) and ``num_heads`` (the course's
    ``MultiHeadAttention`` or an HF attention)."""
    n_heads = getattr(attention, "num_heads", None) or attention.config.num_attention_heads
    d_head = attention.q_proj.weight.shape[0] // n_heads
    if not 0 <= head < n_heads:
        raise ValueError(f"head must be in 0..{n_heads - 1}, got {head}")
    rows = slice(head * d_head, (head + 1) * d_head)
    output = getattr(attention, "o_proj", None) or attention.out_proj
    kv_head = head // (n_heads // (attention.k_proj.weight.shape[0] // d_head))
    kv_rows = slice(kv_head * d_head, (kv_head + 1) * d_head)
    return {
        "W_Q": attention.q_proj.weight[rows].T.detach(),
        "W_K": attention.k_proj.weight[kv_rows].T.detach(),
        "W_V": attention.v_proj.weight[kv_rows].T.detach(),
        "W_O": output.weight[:, rows].T.detach(),
    }


def qk_circuit(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """``W_QK = W_Q W_Kᵀ`` ``(C, C)``: score(x_i, x_j) = x_i W_QK x_jᵀ (before scaling)."""
    return weights["W_Q"] @ weights["W_K"].T


def ov_circuit(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """``W_OV = W_V W_O`` ``(C, C)``: what the head writes for a unit of attention to x_j."""
    return weights["W_V"] @ weights["W_O"]


def composition_score(left: torch.Tensor, right: torch.Tensor) -> float:
    """``‖left @ right‖_F / (‖left‖_F ‖right‖_F)``: how much two circuits line up (0..1).

    K-composition of an earlier head's OV with a later head's QK is
    ``composition_score(W_OV_early, W_QK_late.T)``: the earlier head's output feeds the later
    head's *keys* (Elhage et al., 2021, "Composition").
    """
    return float(torch.linalg.matrix_norm(left @ right) / (torch.linalg.matrix_norm(left)
                                                          * torch.linalg.matrix_norm(right)))


def k_composition(early: nn.Module, late: nn.Module, late_norm_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``(H_late, H_early)`` K-composition scores between every head of ``early`` and of ``late``.

    ``late_norm_weight`` (the later block's LayerNorm/RMSNorm gain) is folded into the later
    head's QK circuit, since its keys read ``norm(x)``; the normalisation's per-token scale
    is left out (a positive scalar per token).
    """
    n_early = early.num_heads
    n_late = late.num_heads
    scores = torch.zeros(n_late, n_early)
    gain = torch.ones(late.q_proj.weight.shape[1]) if late_norm_weight is None else late_norm_weight.detach()
    for j in range(n_early):
        ov = ov_circuit(head_weights(early, j))
        for i in range(n_late):
            qk = gain[:, None] * qk_circuit(head_weights(late, i)) * gain[None, :]
            scores[i, j] = composition_score(ov, qk.T)
    return scores


def full_ov_circuit(embedding: torch.Tensor, ov: torch.Tensor, unembedding: torch.Tensor) -> torch.Tensor:
    """``W_E W_OV W_Uᵀ`` ``(V, V)``: row ``a`` is what the head adds to each output logit when it
    attends to a token ``a`` (norms left out). ``embedding`` and ``unembedding`` are ``(V, C)``."""
    return embedding @ ov @ unembedding.T


def copying_score(circuit: torch.Tensor) -> float:
    """Fraction of rows of a ``(V, V)`` token-to-logit circuit whose largest entry is on the
    diagonal: how often attending to token ``a`` raises the logit of ``a`` most — what an
    induction head's OV circuit must do (a random ``V × V`` matrix scores about ``1/V``)."""
    if circuit.dim() != 2 or circuit.shape[0] != circuit.shape[1]:
        raise ValueError(f"circuit must be a square (V, V) matrix, got {tuple(circuit.shape)}")
    return float((circuit.argmax(-1) == torch.arange(circuit.shape[0])).float().mean())
