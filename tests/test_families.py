"""course_utils.families / weights: every supported family, recomputed from the view, equals
the model (random weights, ``tests.standins``); unsupported families fail clearly.

For each family a small random-weight model (2 layers, d_model 64, eager attention, eval)
runs a padded batch with ``output_attentions`` / ``output_hidden_states``. From the view
alone we recompute: the embeddings (= ``hidden_states[0]``), every layer's attention map with
the course's ``MultiHeadAttention`` (= ``attentions[i]``), every layer's output with a scratch
``EncoderBlock`` (= ``hidden_states[i + 1]``, the last through the final norm) and the whole
model with a scratch ``Encoder``. T5's encoder is recomputed with its relative-position bias
by hand. Tolerances are absolute: ``ATOL_MAPS`` for attention probabilities, ``ATOL_STATES``
for hidden states (their entries are O(1)). ``python -m tests.test_families`` prints the
largest difference per family.
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers as tr

from course_utils import families
from course_utils.attention import MultiHeadAttention
from course_utils.families import UnsupportedModelError
from course_utils.weights import block_from_layer, encoder_from_model, mha_from_layer
from tests.standins import MISTRAL_WINDOW, build_model

ATOL_MAPS = 1e-5
ATOL_STATES = 1e-5
VOCAB = 500
SEQ = 24  # > MISTRAL_WINDOW, so the sliding window matters
PAD_TAIL = 5  # the second sequence of the batch ends in 5 padding tokens
CAUSAL_FAMILIES = ("gpt2", "llama", "qwen2", "mistral")
STACK_FAMILIES = ("bert", "distilbert", "roberta") + CAUSAL_FAMILIES

assert SEQ > MISTRAL_WINDOW


def _batch(model) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, SEQ) ids avoiding the special ids 0-4, and a mask with the 2nd row right-padded."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (2, SEQ), generator=generator)
    mask = torch.ones(2, SEQ, dtype=torch.long)
    mask[1, -PAD_TAIL:] = 0
    pad = getattr(model.config, "pad_token_id", None)
    ids[1, -PAD_TAIL:] = pad if pad is not None else 0
    return ids, mask


def _model(family: str, **overrides):
    return build_model(family, VOCAB, seed=0, head=False, **overrides)


def measure(family: str, **overrides) -> dict[str, float]:
    """Largest |scratch - model| per quantity for ``family`` (maps, embeddings, layers, model)."""
    model = _model(family, **overrides)
    view = families.describe(model)
    ids, mask = _batch(model)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True,
                    output_hidden_states=True)
        hidden, maps = out.hidden_states, out.attentions
        assert len(hidden) == view.n_layers + 1 and len(maps) == view.n_layers
        diffs = {"embeddings": (families.embed(model, ids) - hidden[0]).abs().max().item()}
        map_diff = layer_diff = 0.0
        for i in range(view.n_layers):
            layer_mask = families.attention_mask_for(model, i, SEQ, mask)
            x = hidden[i]
            h = families.layer_norms(model, i)[0](x) if view.norm_placement == "pre" else x
            _, weights = mha_from_layer(model, i)(h, mask=layer_mask)
            map_diff = max(map_diff, (weights - maps[i]).abs().max().item())
            y = block_from_layer(model, i)(x, mask=layer_mask)
            if i == view.n_layers - 1 and view.has_final_norm:
                y = families.final_norm(model)(y)
            layer_diff = max(layer_diff, (y - hidden[i + 1]).abs().max().item())
        diffs["attention_maps"], diffs["layer_outputs"] = map_diff, layer_diff
        if not view.sliding_window:
            scratch = encoder_from_model(model)
            real = mask.bool()
            ours = scratch(ids, attention_mask=mask)
            diffs["whole_model"] = (ours - out.last_hidden_state)[real].abs().max().item()
    return diffs


def measure_t5() -> dict[str, float]:
    """T5's encoder recomputed from the view: pre-RMSNorm, q·k unscaled + relative bias, ReLU FFN."""
    from course_utils.blocks import RMSNorm
    from course_utils.weights import _copy_norm

    model = _model("t5")
    view = families.describe(model)
    ids, mask = _batch(model)
    encoder = model.get_encoder()
    with torch.no_grad():
        out = encoder(input_ids=ids, attention_mask=mask, output_attentions=True,
                      output_hidden_states=True)
        hidden, maps = out.hidden_states, out.attentions
        bias = families.relative_position_bias(model, SEQ)  # (1, H, T, T)
        keep = families.attention_mask_for(model, 0, SEQ, mask)  # (B, 1, T, T)
        diffs = {"embeddings": (families.embed(model, ids) - hidden[0]).abs().max().item(),
                 "attention_maps": 0.0, "layer_outputs": 0.0}

        def norm(module):
            ours = RMSNorm(view.d_model, eps=view.norm_eps)
            _copy_norm(ours, module, "norm")
            return ours

        def heads(x, proj):  # (B, T, C) -> (B, H, T, d)
            y = x @ proj.weight.T
            return y.view(x.shape[0], x.shape[1], view.n_heads, view.head_dim).transpose(1, 2)

        for i in range(view.n_layers):
            attn_norm, ffn_norm = (norm(m) for m in families.layer_norms(model, i))
            w = families.attention_weights(model, i)
            x = hidden[i]
            h = attn_norm(x)
            q, k, v = heads(h, w.q), heads(h, w.k), heads(h, w.v)
            scores = (q @ k.transpose(-2, -1)) * view.attention_scale + bias
            probs = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
            diffs["attention_maps"] = max(diffs["attention_maps"],
                                          (probs - maps[i]).abs().max().item())
            context = (probs @ v).transpose(1, 2).reshape(x.shape[0], SEQ, -1)
            x = x + context @ w.o.weight.T
            ffn = families.ffn_weights(model, i)
            x = x + torch.relu(ffn_norm(x) @ ffn.up.weight.T) @ ffn.down.weight.T
            if i == view.n_layers - 1:
                x = norm(families.final_norm(model))(x)
            diffs["layer_outputs"] = max(diffs["layer_outputs"],
                                         (x - hidden[i + 1]).abs().max().item())
    return diffs


# --------------------------------------------------------------------------- equality
@pytest.mark.parametrize("family", STACK_FAMILIES)
def test_scratch_equals_model(family):
    diffs = measure(family)
    assert diffs["embeddings"] <= ATOL_STATES, diffs
    assert diffs["attention_maps"] <= ATOL_MAPS, diffs
    assert diffs["layer_outputs"] <= ATOL_STATES, diffs
    assert diffs.get("whole_model", 0.0) <= ATOL_STATES, diffs


def test_qwen2_with_sliding_window_layers():
    """Qwen2 slides its window only on layers >= max_window_layers: layer 0 full, layer 1 banded."""
    overrides = dict(use_sliding_window=True, sliding_window=6, max_window_layers=1,
                     layer_types=["full_attention", "sliding_attention"])
    view = families.describe(_model("qwen2", **overrides))
    assert view.sliding_window == 6 and view.layer_types == ("full_attention", "sliding_attention")
    diffs = measure("qwen2", **overrides)
    assert max(diffs.values()) <= ATOL_STATES, diffs


def test_t5_encoder_scratch_equals_model():
    diffs = measure_t5()
    assert max(diffs.values()) <= ATOL_STATES, diffs


def test_maps_are_not_trivially_close():
    """The random weights make the maps peaky: a uniform map would be far from them, and
    dropping RoPE / the sliding window / GQA sharing / Qwen2's biases is caught."""
    model = _model("mistral")
    ids, mask = _batch(model)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True,
                    output_hidden_states=True)
        x = families.layer_norms(model, 0)[0](out.hidden_states[0])
        layer_mask = families.attention_mask_for(model, 0, SEQ, mask)
        mha = mha_from_layer(model, 0)
        assert out.attentions[0].max() > 0.5  # peaky, not uniform
        no_window = families.attention_mask_for(_model("llama"), 0, SEQ, mask)
        _, w = mha(x, mask=no_window)
        assert (w - out.attentions[0]).abs().max() > 0.05  # the window matters
        mha.rope_base = None
        _, w = mha(x, mask=layer_mask)
        assert (w - out.attentions[0]).abs().max() > 0.05  # RoPE matters
    qwen = _model("qwen2")
    with torch.no_grad():
        out = qwen(input_ids=ids, attention_mask=mask, output_attentions=True,
                   output_hidden_states=True)
        x = families.layer_norms(qwen, 0)[0](out.hidden_states[0])
        mha = mha_from_layer(qwen, 0)
        mha.q_proj.bias.zero_()
        mha.k_proj.bias.zero_()
        _, w = mha(x, mask=families.attention_mask_for(qwen, 0, SEQ, mask))
        assert (w - out.attentions[0]).abs().max() > 0.05  # the q/k biases matter


# --------------------------------------------------------------------------- the view
EXPECTED = {
    # family: (kind, norm, placement, positions, ffn, kv_heads, token types, qkv bias)
    "bert": ("encoder", "layernorm", "post", "learned", "gelu", 4, True, True),
    "distilbert": ("encoder", "layernorm", "post", "learned", "gelu", 4, False, True),
    "roberta": ("encoder", "layernorm", "post", "learned", "gelu", 4, True, True),
    "gpt2": ("decoder", "layernorm", "pre", "learned", "gelu_new", 4, False, True),
    "llama": ("decoder", "rmsnorm", "pre", "rope", "swiglu", 2, False, False),
    "qwen2": ("decoder", "rmsnorm", "pre", "rope", "swiglu", 2, False, True),
    "mistral": ("decoder", "rmsnorm", "pre", "rope", "swiglu", 2, False, False),
    "t5": ("encoder-decoder", "rmsnorm", "pre", "relative", "relu", 4, False, False),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_describe(family):
    model = build_model(family, VOCAB, head=True)
    view = families.describe(model)  # works under any task head
    kind, norm, placement, positions, ffn, kv, types, qkv_bias = EXPECTED[family]
    assert (view.family, view.kind, view.norm, view.norm_placement, view.positions, view.ffn,
            view.n_kv_heads, view.has_token_type_embeddings, view.qkv_bias) == \
        (family, kind, norm, placement, positions, ffn, kv, types, qkv_bias)
    assert (view.n_layers, view.n_heads, view.d_model, view.head_dim) == (2, 4, 64, 16)
    assert view.sliding_window == (MISTRAL_WINDOW if family == "mistral" else None)
    assert view.position_offset == (2 if family == "roberta" else 0)
    assert view.out_bias == (family in ("bert", "distilbert", "roberta", "gpt2"))
    assert view.norm_eps == {"distilbert": 1e-12, "bert": 1e-12, "roberta": 1e-12,
                             "gpt2": 1e-5}.get(family, 1e-6)
    assert view.attention_scale == (1.0 if family == "t5" else 1 / math.sqrt(16))
    assert view.rope_base == (10000.0 if positions == "rope" else None)
    assert family in view.summary()


def test_gpt2_fused_projection_is_split_and_transposed():
    model = _model("gpt2")
    w = families.attention_weights(model, 1)
    c_attn = model.h[1].attn.c_attn
    assert torch.equal(torch.cat([w.q.weight, w.k.weight, w.v.weight]), c_attn.weight.T)
    assert torch.equal(torch.cat([w.q.bias, w.k.bias, w.v.bias]), c_attn.bias)
    x = torch.randn(3, 64)
    assert torch.allclose(x @ w.q.weight.T + w.q.bias, c_attn(x)[:, :64], atol=1e-6)


def test_position_tables_and_ids():
    roberta = _model("roberta")
    table = families.position_embedding_matrix(roberta)
    full = roberta.embeddings.position_embeddings.weight
    assert table.shape[0] == full.shape[0] - 2 and torch.equal(table[0], full[2])
    ids, _ = _batch(roberta)
    positions = families.position_ids(roberta, ids)
    assert positions[0, 0] == 2 and positions[1, -1] == roberta.config.pad_token_id
    assert families.position_embedding_matrix(_model("llama")) is None
    with pytest.raises(ValueError, match="no token type"):
        families.embed(_model("distilbert"), ids, token_type_ids=torch.zeros_like(ids))


def test_mha_from_layer_refuses_t5_with_a_reason():
    with pytest.raises(ValueError, match="relative position bias"):
        mha_from_layer(_model("t5"), 0)


def test_old_names_are_wrappers_that_still_work():
    from course_utils import blocks, weights

    model = _model("bert")
    assert blocks.load_bert_weights is weights.load_bert_weights
    ids, mask = _batch(model)
    with torch.no_grad():
        a, wa = weights.mha_from_bert(model.encoder.layer[0])(model.embeddings(ids))
        b, wb = mha_from_layer(model, 0)(model.embeddings(ids))
    assert torch.equal(a, b) and torch.equal(wa, wb)
    qwen = _model("qwen2")
    mha = weights.mha_from_llama(qwen.layers[0].self_attn, qwen.config)
    assert isinstance(mha, MultiHeadAttention) and torch.equal(
        mha.q_proj.bias, qwen.layers[0].self_attn.q_proj.bias)


# --------------------------------------------------------------------------- unsupported
def _albert():
    config = tr.AlbertConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=64,
                             num_hidden_layers=1, num_attention_heads=4, intermediate_size=128)
    return tr.AlbertModel(config).eval()


def test_unsupported_family_raises_a_clear_error():
    for model in (_albert(), tr.BloomModel(tr.BloomConfig(vocab_size=VOCAB, hidden_size=64,
                                                          n_layer=1, n_head=4))):
        name = type(model).__name__
        with pytest.raises(UnsupportedModelError, match=name) as info:
            families.describe(model)
        message = str(info.value)
        for family in families.SUPPORTED_FAMILIES:
            assert family in message
        assert isinstance(info.value, ValueError)
        with pytest.raises(UnsupportedModelError):
            families.attention_weights(model, 0)
    with pytest.raises(ValueError, match="transformers model"):
        families.describe(torch.nn.Linear(2, 2))


def test_bert_with_relative_positions_is_refused():
    model = build_model("bert", VOCAB, head=False, position_embedding_type="relative_key")
    with pytest.raises(UnsupportedModelError, match="position_embedding_type"):
        families.describe(model)


def test_model_inputs_fits_the_model():
    class FakeTokenizer:
        pad_token = "<pad>"

        def __call__(self, texts, **kwargs):
            ids = torch.ones(len(texts), 3, dtype=torch.long)
            return {"input_ids": ids, "attention_mask": ids, "token_type_ids": 0 * ids}

    assert "token_type_ids" not in families.model_inputs(FakeTokenizer(), _model("distilbert"),
                                                         ["a", "b"])
    assert "token_type_ids" in families.model_inputs(FakeTokenizer(), _model("bert"), ["a"])


# --------------------------------------------------------------------------- find_word
TEXT = "The animal didn't cross the street because it was too tired, and its owner knew it."
_CORPUS = [TEXT, "unbelievably tired animals cross streets", "it its item owner knew"] * 30


def _trained(kind: str):
    """A small fast tokenizer of each kind, trained here (WordPiece / byte-level BPE /
    Unigram with ▁), wrapped as transformers wraps a hub tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "##":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[UNK]"],
                                            show_progress=False)
    elif kind == "Ġ":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=80, special_tokens=["<unk>"],
                                          unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return tr.PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.mark.parametrize("kind", ["##", "Ġ", "▁"])
def test_find_word_on_every_tokenizer_kind(kind):
    tokenizer = _trained(kind)
    assert families.word_start_convention(tokenizer) == kind
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(TEXT)["input_ids"])
    offsets = tokenizer(TEXT, return_offsets_mapping=True)["offset_mapping"]

    def covered(index: int) -> str:
        start, end = offsets[index]
        return TEXT[start:end].strip()

    first, second = families.find_word(tokenizer, TEXT, "it"), families.find_word(
        tokenizer, TEXT, "it", occurrence=2)
    assert covered(first).lower().startswith("it") and covered(second).lower().startswith("it")
    assert first < second  # the second "it", not "its"
    assert TEXT.lower().index(" it ") < offsets[first][1] <= TEXT.lower().index(" its ")
    assert covered(families.find_word(tokenizer, TEXT, "Animal")).lower().startswith("an")
    owner = families.find_word(tokenizer, TEXT, "owner")
    assert "o" in tokens[owner].lower() and covered(owner)[0].lower() == "o"
    with pytest.raises(ValueError, match="'zebra' does not occur"):
        families.find_word(tokenizer, TEXT, "zebra")
    with pytest.raises(ValueError, match="occurs only 2 time"):
        families.find_word(tokenizer, TEXT, "it", occurrence=3)
    with pytest.raises(ValueError, match="positive integer"):
        families.find_word(tokenizer, TEXT, "it", occurrence=0)


# --------------------------------------------------------------------------- stand-ins on disk
@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    from tests.standins import FAMILIES, make_standin

    root = tmp_path_factory.mktemp("standins")
    for family in FAMILIES:
        make_standin(family, root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "t5", "gpt2", "llama",
                                    "qwen2", "mistral"])
def test_standins_load_through_course_models(family, standin_dir):
    """Each saved stand-in loads with models.load_encoder / load_decoder (eager attention),
    its tokenizer has the right word-start mark, and find_word finds "it" (not "its")."""
    from course_utils.models import load_decoder, load_encoder

    encoder = family in ("bert", "distilbert", "roberta", "t5")
    model, tokenizer = (load_encoder if encoder else load_decoder)(str(standin_dir / family))
    view = families.describe(model, tokenizer)
    assert view.family == family and not model.training
    assert model.config._attn_implementation == "eager"
    assert view.word_start == {"bert": "##", "distilbert": "##", "t5": "▁"}.get(family, "Ġ")
    index = families.find_word(tokenizer, TEXT, "it")
    piece = tokenizer.convert_ids_to_tokens(tokenizer(TEXT)["input_ids"])[index]
    assert piece.lstrip("Ġ▁#").lower() == "it", piece
    inputs = families.model_inputs(tokenizer, model, [TEXT, "a short one"])
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    assert out.attentions[0].shape[-1] == inputs["input_ids"].shape[1]
    if family == "roberta":  # RoBERTa's specials at 0-3, <s> ... </s>
        ids = tokenizer("hi")["input_ids"]
        assert (ids[0], ids[-1], tokenizer.pad_token_id) == (0, 2, 1)
    wrong = load_decoder if encoder else load_encoder
    with pytest.raises(UnsupportedModelError, match="families|needs one of"):
        wrong(str(standin_dir / family))


@pytest.mark.slow
def test_load_encoder_refuses_an_unsupported_family(tmp_path):
    from course_utils.models import load_encoder
    from tests.standins import wordpiece_tokenizer

    _albert().save_pretrained(tmp_path)
    wordpiece_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="AlbertModel.*Supported families"):
        load_encoder(str(tmp_path))


if __name__ == "__main__":
    print(f"{'family':10s} " + " ".join(f"{k:>15s}" for k in
                                        ("embeddings", "attention_maps", "layer_outputs",
                                         "whole_model")))
    for name in STACK_FAMILIES + ("t5",):
        result = measure_t5() if name == "t5" else measure(name)
        print(f"{name:10s} " + " ".join(
            f"{result[k]:15.1e}" if k in result else f"{'n/a':>15s}"
            for k in ("embeddings", "attention_maps", "layer_outputs", "whole_model")))


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta"])
def test_encoder_modules_catch_each_stage(family):
    """Hooks on ``encoder_modules`` catch the stages the model's own outputs report: the
    embedding norm's output is ``hidden_states[0]``, each layer's FFN norm output is
    ``hidden_states[i + 1]``, the attention module's second output is ``attentions[i]``, and
    the output projection's input, projected, plus the layer input is the attention norm's input."""
    model = _model(family)
    ids, mask = _batch(model)
    caught: dict[str, torch.Tensor] = {}

    def tap(name, side):
        def hook(module, args, output):
            caught[name] = args[0] if side == "in" else output
        return hook

    handles = [families.encoder_modules(model, 0).embedding_norm.register_forward_hook(tap("emb", "out"))]
    for i in range(model.config.num_hidden_layers):
        m = families.encoder_modules(model, i)
        handles += [m.ffn_norm.register_forward_hook(tap(f"out{i}", "out")),
                    m.attention.register_forward_hook(tap(f"att{i}", "out")),
                    m.out.register_forward_hook(tap(f"ctx{i}", "in")),
                    m.attn_norm.register_forward_hook(tap(f"res{i}", "in"))]
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                        output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(caught["emb"], out.hidden_states[0])
    for i in range(model.config.num_hidden_layers):
        m = families.encoder_modules(model, i)
        torch.testing.assert_close(caught[f"out{i}"], out.hidden_states[i + 1])
        torch.testing.assert_close(caught[f"att{i}"][1], out.attentions[i])
        torch.testing.assert_close(m.out(caught[f"ctx{i}"]) + out.hidden_states[i], caught[f"res{i}"])
    assert (families.encoder_modules(model, 0).token_type is None) == (family == "distilbert")


def test_encoder_modules_refuses_a_decoder():
    with pytest.raises(ValueError, match="encoder families.*gpt2 model"):
        families.encoder_modules(_model("gpt2"), 0)
