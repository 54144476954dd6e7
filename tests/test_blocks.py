"""course_utils.blocks: scratch norms, blocks and encoder vs torch and MiniLM (same weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.blocks import (
    Block,
    CausalLM,
    Encoder,
    EncoderBlock,
    FeedForward,
    LayerNorm,
    RMSNorm,
    Transformer,
    TransformerConfig,
    attention_states,
    config_from_torch_layer,
    copy_torch_encoder_layer,
    load_bert_weights,
    parameter_breakdown,
    parameter_formula,
)
from course_utils.masks import causal_mask

# Tolerances: one block in fp32 reorders a few sums (≈ 5e-7 measured); MiniLM's six
# post-norm layers with eps=1e-12 amplify that to ≈ 5e-5 on some large hidden dimensions.
BLOCK_ATOL = 1e-5
MINILM_ATOL = 1e-4


def tiny_config(**overrides) -> TransformerConfig:
    base = dict(vocab_size=50, max_seq_len=32, d_model=32, num_heads=4, num_layers=2,
                d_ff=64, eps=1e-5)
    base.update(overrides)
    return TransformerConfig(**base)


# ----------------------------------------------------------------------------- norms
@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_torch(bias):
    torch.manual_seed(0)
    ours, ref = LayerNorm(48, eps=1e-5, bias=bias), nn.LayerNorm(48, eps=1e-5, bias=bias)
    with torch.no_grad():
        ref.weight.normal_()
        ours.weight.copy_(ref.weight)
        if bias:
            ref.bias.normal_()
            ours.bias.copy_(ref.bias)
    x = torch.randn(3, 7, 48) * 5 + 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


def test_rmsnorm_matches_torch():
    torch.manual_seed(0)
    ours, ref = RMSNorm(48, eps=1e-6), nn.RMSNorm(48, eps=1e-6)
    with torch.no_grad():
        ref.weight.normal_()
        ours.weight.copy_(ref.weight)
    x = torch.randn(3, 7, 48) * 5 + 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)
    # RMSNorm does not centre: its output mean is not 0, unlike LayerNorm's.
    assert LayerNorm(48)(x).mean(-1).abs().max() < 1e-5
    assert RMSNorm(48)(x).mean(-1).abs().max() > 0.1


def test_norm_rejects_wrong_width():
    with pytest.raises(ValueError, match="last dimension 8"):
        LayerNorm(8)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="last dimension 8"):
        RMSNorm(8)(torch.randn(2, 4))


# ----------------------------------------------------------------------------- vs torch layer
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_block_matches_torch_transformer_encoder_layer(norm_first, activation):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, activation=activation,
                                       batch_first=True, norm_first=norm_first).eval()
    with torch.no_grad():  # non-trivial norm parameters, so a swapped norm would show
        for norm in (layer.norm1, layer.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.1)
    block = copy_torch_encoder_layer(EncoderBlock(config_from_torch_layer(layer)), layer).eval()
    x = torch.randn(3, 10, 64)
    keep = torch.ones(3, 10, dtype=torch.bool)
    keep[1, 6:] = False  # the second sequence is padded
    with torch.no_grad():
        expected = layer(x, src_key_padding_mask=~keep)
        got = block(x, mask=keep[:, None, None, :])
    # torch's fast path zeroes padded positions' outputs; compare real tokens.
    torch.testing.assert_close(got[keep], expected[keep], atol=BLOCK_ATOL, rtol=0)


def test_copy_refuses_other_norm_order():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=True)
    block = EncoderBlock(tiny_config(d_model=16, num_heads=2, d_ff=32, norm_first=False))
    with pytest.raises(ValueError, match="norm order"):
        copy_torch_encoder_layer(block, layer)


def test_post_and_pre_norm_differ():
    torch.manual_seed(0)
    post = EncoderBlock(tiny_config(norm_first=False))
    pre = EncoderBlock(tiny_config(norm_first=True))
    pre.load_state_dict(post.state_dict())
    x = torch.randn(2, 5, 32)
    assert (post(x) - pre(x)).abs().max() > 1e-2


# ----------------------------------------------------------------------------- states
@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(norm_first=True), dict(norm="rmsnorm", activation="swiglu", bias=False,
                                          positional="rope", num_kv_heads=2, causal=True)],
)
def test_block_states_are_the_named_stages(overrides):
    torch.manual_seed(0)
    config = tiny_config(**overrides)
    block = EncoderBlock(config).eval()
    x = torch.randn(2, 6, 32)
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False
    with torch.no_grad():
        out, states = block(x, mask=mask, return_states=True)
    assert torch.equal(states["output"], out)
    assert torch.equal(states["input"], x)
    b, t, c, h = 2, 6, config.d_model, config.num_heads
    shapes = {"q": (b, h, t, c // h), "k": (b, h, t, c // h), "scores": (b, h, t, t),
              "attn_weights": (b, h, t, t), "context": (b, t, c), "attn_out": (b, t, c),
              "ffn_up": (b, t, config.d_ff), "ffn_act": (b, t, config.d_ff),
              "ffn_down": (b, t, c), "attn_residual": (b, t, c), "ffn_residual": (b, t, c)}
    for name, shape in shapes.items():
        assert tuple(states[name].shape) == shape, name
    # the stages add up: residual = input + attention output (post- and pre-norm alike)
    torch.testing.assert_close(states["attn_residual"], x + states["attn_out"])
    weights = states["attn_weights"]
    torch.testing.assert_close(weights.sum(-1), torch.ones(b, h, t))
    assert weights[0, ..., 4:].abs().max() == 0  # padded keys get no weight
    order = list(states)
    if config.norm_first:
        assert order.index("attn_norm") < order.index("q")
    else:
        assert order.index("attn_norm") > order.index("attn_residual")


def test_attention_states_equal_torch_stage_by_stage():
    """The named stages are what torch computes from the same q, k, v and weights:
    torch's SDPA gives the context, our out_proj of it the output (GQA + RoPE + mask)."""
    torch.manual_seed(0)
    attn = EncoderBlock(tiny_config(positional="rope", num_kv_heads=1)).attn
    x = torch.randn(2, 5, 32)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    with torch.no_grad():
        out, weights, states = attention_states(attn, x, mask=mask)
        q, k, v = states["q"], states["k"], states["v"]
        torch.testing.assert_close(states["scores"], q @ k.transpose(-2, -1) / 8 ** 0.5)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, d)
        torch.testing.assert_close(states["context"], context.transpose(1, 2).reshape(2, 5, 32),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(out, F.linear(states["context"], attn.out_proj.weight,
                                                 attn.out_proj.bias), atol=1e-6, rtol=0)
    assert list(states) == ["q", "k", "v", "scores", "attn_weights", "context", "attn_out"]
    assert states["attn_weights"] is weights and weights[1, ..., 3:].abs().max() == 0
    assert torch.equal(k[:, 0], k[:, 3])  # one KV head serves every query head


@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
def test_feedforward_equals_transformers_mlp_with_the_same_weights(activation):
    """SwiGLU = transformers' LlamaMLP, GELU = BertIntermediate + BertOutput's dense, each
    loaded with our weights: an independent implementation, not a copy of ours."""
    from transformers import BertConfig, LlamaConfig
    from transformers.models.bert.modeling_bert import BertIntermediate
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    ffn = FeedForward(tiny_config(activation=activation, bias=activation == "gelu")).eval()
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        if activation == "swiglu":
            ref = LlamaMLP(LlamaConfig(hidden_size=32, intermediate_size=64, hidden_act="silu",
                                       mlp_bias=False)).eval()
            for name in ("gate_proj", "up_proj", "down_proj"):
                getattr(ref, name).weight.copy_(getattr(ffn, name).weight)
            expected = ref(x)
        else:
            up = BertIntermediate(BertConfig(hidden_size=32, intermediate_size=64, hidden_act="gelu"))
            up.dense.load_state_dict(ffn.up_proj.state_dict())
            expected = ffn.down_proj(up(x))  # BertOutput's dense is a plain Linear: ours
        torch.testing.assert_close(ffn(x), expected, atol=1e-6, rtol=0)
        assert (ffn(x) - expected).abs().max() < 1e-6


# ----------------------------------------------------------------------------- causal
def _leak(config: TransformerConfig) -> float:
    """Max change of outputs at positions <= 3 when tokens 4.. change."""
    torch.manual_seed(0)
    model = Encoder(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 10))
    changed = ids.clone()
    changed[:, 4:] = torch.randint(0, config.vocab_size, (2, 6))
    with torch.no_grad():
        return (model(ids)[:, :4] - model(changed)[:, :4]).abs().max().item()


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope"])
def test_causal_encoder_does_not_leak_the_future(positional):
    assert _leak(tiny_config(causal=True, norm_first=True, positional=positional)) == 0.0
    # the same model without the causal mask does see the future: the check can fail
    assert _leak(tiny_config(causal=False, norm_first=True, positional=positional)) > 1e-4


def test_causal_block_gradient_is_lower_triangular():
    torch.manual_seed(0)
    block = EncoderBlock(tiny_config(causal=True, norm_first=True))
    x = torch.randn(1, 6, 32, requires_grad=True)
    block(x)[0, 2].sum().backward()
    assert x.grad[0, 3:].abs().max() == 0
    assert x.grad[0, :3].abs().max() > 0


@pytest.mark.parametrize("causal", [False, True])
def test_a_non_boolean_mask_is_refused_clearly(causal):
    block = EncoderBlock(tiny_config(causal=causal))
    with pytest.raises(ValueError, match="boolean"):
        block(torch.randn(1, 6, 32), mask=torch.ones(1, 1, 1, 6))


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = Encoder(tiny_config()).eval()
    ids = torch.randint(1, 50, (1, 5))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        alone = model(ids)
        batch = model(padded, attention_mask=mask)
        unmasked = model(padded)
    torch.testing.assert_close(batch[:, :5], alone, atol=1e-5, rtol=0)
    assert (unmasked[:, :5] - alone).abs().max() > 1e-4  # without the mask, padding leaks


@pytest.mark.slow
def test_tiny_causal_lm_learns_as_documented():
    """The module docstring's recipe: Encoder(causal, pre-norm) + linear head learns."""
    torch.manual_seed(0)
    config = tiny_config(causal=True, norm_first=True, num_layers=1)
    body, head = Encoder(config), nn.Linear(32, 50, bias=False)
    head.weight = body.token_emb.weight
    ids = torch.arange(1, 17).repeat(4, 1)  # a fixed sequence: next token = this + 1
    opt = torch.optim.AdamW(body.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        logits = head(body(ids))
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 50), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(d_model=30, num_heads=4), r"d_model \(30\) must be divisible by num_heads \(4\)"),
        (dict(num_kv_heads=3), r"multiple of num_kv_heads \(3\)"),
        (dict(norm="batchnorm"), "norm must be one of"),
        (dict(activation="tanh"), "activation must be one of"),
        (dict(positional="alibi"), "positional must be one of"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(num_layers=0), "num_layers must be a positive integer, got 0"),
        (dict(d_model=27, num_heads=3, positional="sinusoidal"), "even d_model"),
        (dict(d_model=36, num_heads=4, positional="rope"), "even head_dim"),
        (dict(eps=0.0), "eps must be positive"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


def test_config_defaults():
    config = tiny_config(d_ff=None)
    assert config.d_ff == 4 * 32 and config.final_norm is False and config.head_dim == 8
    assert tiny_config(norm_first=True).final_norm is True
    assert TransformerConfig().eps == 1e-5 == nn.LayerNorm(4).eps  # neutral, not MiniLM's
    assert TransformerConfig.minilm().eps == 1e-12


@pytest.mark.slow  # verifies the bundled model files
def test_minilm_config_is_the_bundled_models():
    from transformers import AutoConfig

    from course_utils.models import encoder_dir

    assert TransformerConfig.minilm() == TransformerConfig.from_bert(
        AutoConfig.from_pretrained(encoder_dir()))


# ----------------------------------------------------------------------------- the family
def test_old_names_are_the_new_classes():
    assert Encoder is Transformer and EncoderBlock is Block


def test_causal_lm_ties_weights_and_returns_attention():
    torch.manual_seed(0)
    config = tiny_config(causal=True, norm_first=True)
    tied, untied = CausalLM(config, tie_weights=True), CausalLM(config)
    assert tied.lm_head.weight is tied.transformer.token_emb.weight
    assert untied.lm_head.weight is not untied.transformer.token_emb.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(
        p.numel() for p in tied.parameters()) == 50 * 32  # one (V, C) table fewer
    ids = torch.randint(0, 50, (2, 7))
    logits, maps = tied.forward_with_attention(ids)
    assert logits.shape == (2, 7, 50) and len(maps) == 2 and maps[0].shape == (2, 4, 7, 7)
    torch.testing.assert_close(logits, tied(ids))
    assert maps[1].triu(1).abs().max() == 0  # causal: no weight on later positions
    with pytest.raises(ValueError, match="causal=True"):
        CausalLM(tiny_config())


def test_attention_only_blocks_have_no_ffn():
    torch.manual_seed(0)
    config = tiny_config(attention_only=True, norm_first=True, causal=True)
    block = Block(config)
    assert block.ffn is None and block.ffn_norm is None
    assert not any("ffn" in name for name, _ in block.named_parameters())
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y, states = block(x, return_states=True)
        torch.testing.assert_close(y, x + block.attn(block.attn_norm(x), mask=causal_mask(5))[0])
    assert "ffn_up" not in states


def test_torch_init_keeps_pytorch_defaults():
    """``init="torch"`` leaves each layer's default init (embeddings N(0, 1)); ``"gpt2"``
    draws N(0, 0.02²)."""
    torch.manual_seed(0)
    gpt2 = Transformer(tiny_config(vocab_size=2000))
    torch.manual_seed(0)
    plain = Transformer(tiny_config(vocab_size=2000, init="torch"))
    assert 0.015 < gpt2.token_emb.weight.std().item() < 0.025
    assert 0.9 < plain.token_emb.weight.std().item() < 1.1


def test_bad_inputs_raise():
    model = Encoder(tiny_config())
    with pytest.raises(ValueError, match="exceeds max_seq_len=32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor of shape"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="must be boolean"):
        model.blocks[0](torch.randn(1, 4, 32), mask=torch.ones(1, 1, 1, 4))
    with pytest.raises(ValueError, match=r"d_model=32\), got \(1, 4, 16\)"):
        model.blocks[0](torch.randn(1, 4, 16))


def test_sinusoidal_positions_are_the_fixed_encoding():
    from course_utils.positional import sinusoidal_encoding

    model = Encoder(tiny_config(positional="sinusoidal"))
    _, states = model(torch.zeros(1, 7, dtype=torch.long), return_states=True)
    torch.testing.assert_close(states["position_embedding"], sinusoidal_encoding(7, 32))
    assert "pos_emb" not in dict(model.named_parameters())


# ----------------------------------------------------------------------------- accounting
@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(norm_first=True), dict(type_vocab_size=2, embedding_norm=True),
     dict(norm="rmsnorm", activation="swiglu", bias=False, positional="rope", num_kv_heads=2),
     dict(positional="sinusoidal", norm="none"),
     dict(attention_only=True, norm_first=True, causal=True)],
)
def test_parameter_formula_matches_model(overrides):
    config = tiny_config(**overrides)
    model = Encoder(config)
    assert parameter_formula(config) == parameter_breakdown(model)
    assert parameter_formula(config)["total"] == sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- MiniLM
@pytest.fixture(scope="module")
def minilm_and_scratch(encoder):
    model, tokenizer = encoder
    return model, tokenizer, Encoder.from_bert(model)


@pytest.mark.slow
def test_scratch_encoder_equals_minilm_on_padded_batch(minilm_and_scratch):
    model, tokenizer, scratch = minilm_and_scratch
    batch = tokenizer(
        ["The animal didn't cross the street because it was too tired.", "A short one."],
        padding=True, return_tensors="pt",
    )
    pair = tokenizer("Is this the first segment?", "And this the second.", return_tensors="pt")
    assert batch["attention_mask"].min() == 0, "the batch must contain padding"
    for inputs in (batch, pair):
        with torch.no_grad():
            ref = model(**inputs, output_hidden_states=True, output_attentions=True)
            hidden, states = scratch(inputs["input_ids"], inputs["attention_mask"],
                                     inputs["token_type_ids"], return_states=True)
        assert (hidden - ref.last_hidden_state).abs().max() < MINILM_ATOL
        assert len(states["hidden_states"]) == len(ref.hidden_states) == 7
        for ours, theirs in zip(states["hidden_states"], ref.hidden_states, strict=True):
            assert (ours - theirs).abs().max() < MINILM_ATOL
        for layer, theirs in zip(states["layers"], ref.attentions, strict=True):
            assert (layer["attn_weights"] - theirs).abs().max() < 1e-5


@pytest.mark.slow
def test_minilm_parameter_count(minilm_and_scratch):
    model, _, scratch = minilm_and_scratch
    bert_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pooler"))
    assert parameter_formula(scratch.config)["total"] == bert_params
    assert parameter_breakdown(scratch)["total"] == bert_params


@pytest.mark.slow
def test_load_bert_weights_refuses_a_mismatched_encoder(minilm_and_scratch):
    model, _, scratch = minilm_and_scratch
    wrong = Encoder(TransformerConfig(**{**scratch.config.to_dict(), "num_layers": 5}))
    with pytest.raises(ValueError, match="BERT has 6 layers, the scratch encoder 5"):
        load_bert_weights(wrong, model)
    with pytest.raises(ValueError, match="post-norm encoder"):
        load_bert_weights(Encoder(tiny_config(norm_first=True)), model)
