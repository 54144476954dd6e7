"""Checkers for notebook 14 (inside a real Llama: logit lens, patching, attribution)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_utils import interp
from course_utils.exercises import CheckResult, run_check
from course_utils.solutions import nb14 as solutions


def _random_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def _readout(model, run: interp.Run, direction: torch.Tensor) -> torch.Tensor:
    norm = model.model.norm
    final = run.resid[-1, -1]
    return (norm.weight * direction * torch.rsqrt(final.pow(2).mean() + norm.variance_epsilon)).detach()


def check_head_logit_contributions(
    head_logit_contributions: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    model=None, run: interp.Run | None = None, direction: torch.Tensor | None = None,
) -> CheckResult:
    """Per-head direct logit attribution for every layer, against ``interp.direct_logit_attribution``.

    Cases: a random-weight Llama (always) and, when given, the notebook's model, run and
    direction (SmolLM2 on the clean prompt).
    """
    setups = []
    small = _random_llama()
    ids = torch.tensor([[3, 14, 15, 9, 26, 5]])
    small_run = interp.record(small, ids)
    unembed = small.get_output_embeddings().weight
    setups.append((small, small_run, unembed[7] - unembed[2]))
    if model is not None and run is not None and direction is not None:
        setups.append((model, run, direction))
    cases, expected_rows = [], []
    for net, recorded, vector in setups:
        expected = interp.direct_logit_attribution(net, recorded, vector).heads  # (L, H)
        readout = _readout(net, recorded, vector)
        for layer, block in enumerate(net.model.layers):
            z = recorded.head_inputs[layer, -1]  # (H, d_head)
            cases.append(((z, block.self_attn.o_proj.weight.detach(), readout), {}))
            expected_rows.append(expected[layer])
    lookup = {id(args[0]): row for (args, _), row in zip(cases, expected_rows, strict=True)}

    def reference(z, w_o, readout):
        return lookup[id(z)]

    def diagnose(got, want, args, kwargs):
        z, w_o, readout = args
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor of shape {tuple(want.shape)}"
        if got.shape != want.shape:
            return f"shape {tuple(got.shape)}, expected (H,) = {tuple(want.shape)}: one number per head"
        if torch.allclose(got.float(), want, atol=1e-4, rtol=1e-4):
            return None
        n_heads, d_head = z.shape
        swapped = torch.einsum("cdh,hd->hc", w_o.reshape(w_o.shape[0], d_head, n_heads), z) @ readout
        if torch.allclose(got.float(), swapped, atol=1e-4, rtol=1e-4):
            return ("the columns of w_o are grouped head by head (C, H, d_head), not interleaved "
                    "(C, d_head, H)")
        if torch.allclose(got.float(), torch.full_like(want, float(want.sum()) / n_heads), atol=1e-4):
            return "every head got the same share: each head's output goes through its own block of w_o"
        if torch.allclose(got.float().sum(), want.sum(), atol=1e-3, rtol=1e-4):
            return "the total over heads is right but it is split between heads wrongly"
        return "the values differ from each head's output written through o_proj and read out"

    return run_check("head_logit_contributions", head_logit_contributions, reference, cases, diagnose,
                     solution_fn=solutions.head_logit_contributions)
