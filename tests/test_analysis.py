"""course_utils.analysis: every score on hand-built attention patterns with known answers,
the ablation hooks against explicit computations, and the real models' hook points."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils.analysis import (
    FEATURE_NAMES,
    AttentionOnlyConfig,
    AttentionOnlyTransformer,
    Rules,
    ablate_heads,
    antecedent_preference,
    attention_entropy,
    best_matching_agreement,
    diagonal_score,
    duplicate_token_score,
    head_ablation_effects,
    head_features,
    head_output_projections,
    induction_score,
    key_mass,
    layer_ablation_effects,
    mean_distance,
    offset_score,
    prefix_matching_score,
    previous_token_score,
    repeated_block_batch,
    repeated_half_mask,
    rule_labels,
    skip_layers,
    uniform_induction_baseline,
)

T = 8


def previous_token_head(n: int = T) -> torch.Tensor:
    """Row 0 attends to itself (nothing earlier), row i to i - 1."""
    weights = torch.zeros(n, n)
    weights[0, 0] = 1
    weights[torch.arange(1, n), torch.arange(n - 1)] = 1
    return weights


def uniform(n: int = T) -> torch.Tensor:
    return torch.full((n, n), 1.0 / n)


def causal_uniform(n: int = T) -> torch.Tensor:
    weights = torch.ones(n, n).tril()
    return weights / weights.sum(-1, keepdim=True)


def test_previous_token_head_scores_one_and_uniform_scores_one_over_n():
    assert previous_token_score(previous_token_head()).item() == pytest.approx(1.0)
    assert previous_token_score(uniform()).item() == pytest.approx(1 / T)
    assert offset_score(uniform(), 1).item() == pytest.approx(1 / T)
    assert diagonal_score(torch.eye(T)).item() == pytest.approx(1.0)
    assert diagonal_score(previous_token_head()).item() == pytest.approx(1 / T)  # row 0 only


def test_scores_keep_leading_axes():
    stacked = torch.stack([previous_token_head(), uniform(), torch.eye(T)])  # (3, T, T)
    batch = stacked[None].expand(2, 3, T, T)  # (B, H, T, T)
    assert previous_token_score(batch).shape == (2, 3)
    assert torch.allclose(previous_token_score(stacked), torch.tensor([1.0, 1 / T, 0.0]))


def test_entropy_one_hot_zero_uniform_log_n():
    assert attention_entropy(torch.eye(T)).item() == pytest.approx(0.0)
    assert attention_entropy(uniform()).item() == pytest.approx(math.log(T))
    assert attention_entropy(uniform(), normalise=True).item() == pytest.approx(1.0)
    # causal uniform: row i spreads over i + 1 keys -> mean of log(i + 1); normalised = 1
    expected = sum(math.log(i + 1) for i in range(T)) / T
    assert attention_entropy(causal_uniform()).item() == pytest.approx(expected, rel=1e-6)
    assert attention_entropy(causal_uniform(), normalise=True).item() == pytest.approx(1.0)
    assert not torch.isnan(attention_entropy(previous_token_head()))


def test_key_mass_and_distance():
    cls = torch.zeros(T, dtype=torch.bool)
    cls[0] = True
    to_cls = torch.zeros(T, T)
    to_cls[:, 0] = 1
    assert key_mass(to_cls, cls).item() == pytest.approx(1.0)
    assert key_mass(uniform(), cls).item() == pytest.approx(1 / T)
    # attending to key 0 from row i has distance i: mean (T - 1) / 2
    assert mean_distance(to_cls).item() == pytest.approx((T - 1) / 2)
    assert mean_distance(torch.eye(T)).item() == 0.0
    assert mean_distance(previous_token_head()).item() == pytest.approx((T - 1) / T)
    batched_mask = torch.stack([cls, ~cls])  # (B, T) masks against (B, H, T, T)
    weights = to_cls[None, None].expand(2, 3, T, T)
    assert torch.allclose(key_mass(weights, batched_mask), torch.tensor([[1.0] * 3, [0.0] * 3]))


def test_features_and_rules_name_hand_built_heads():
    cls = torch.zeros(T, dtype=torch.bool)
    cls[0] = True
    sep = torch.zeros(T, dtype=torch.bool)
    sep[-1] = True
    to_sep = torch.zeros(T, T)
    to_sep[:, -1] = 1
    local = torch.zeros(T, T)  # each row spread over i - 1, i, i + 1
    for i in range(T):
        for j in range(max(0, i - 1), min(T, i + 2)):
            local[i, j] = 1
    local = local / local.sum(-1, keepdim=True)
    layer = torch.stack([to_sep, previous_token_head(), local, uniform()])  # (H=4, T, T)
    features = head_features([layer, layer], cls, sep)
    assert features.shape == (2, 4, len(FEATURE_NAMES))
    assert rule_labels(features) == ["delimiter", "positional", "local", "broad"] * 2
    # a sharp next-token head that parks the rest on [SEP] is positional, not delimiter
    next_then_sep = torch.zeros(T, T)
    for i in range(T):
        next_then_sep[i, min(i + 1, T - 1)] += 0.45
        next_then_sep[i, -1] += 0.55
    mixed = head_features([next_then_sep[None]], cls, sep)
    assert mixed[0, 0, FEATURE_NAMES.index("sep_punct")] >= 0.5
    assert rule_labels(mixed, Rules(positional=0.3)) == ["positional"]
    # raising the positional threshold above 1 turns the previous-token head into "local"
    assert rule_labels(features[0], Rules(positional=1.01))[1] == "local"
    # uniform attention over 8 tokens puts 3/8 on self + neighbours: "local" at a lower threshold
    assert rule_labels(features[0], Rules(local=0.3))[3] == "local"
    with pytest.raises(ValueError, match="columns"):
        rule_labels(features[..., :3])


def test_best_matching_agreement():
    agreement, mapping = best_matching_agreement([0, 0, 1, 1, 2], ["a", "a", "b", "b", "b"])
    assert agreement == pytest.approx(0.8) and mapping == {0: "a", 1: "b"}
    with pytest.raises(ValueError):
        best_matching_agreement([0], ["a", "b"])


def test_induction_and_prefix_matching_on_a_perfect_induction_head():
    tokens = torch.tensor([7, 8, 1, 2, 3, 4, 1, 2, 3, 4])  # prefix 2, block 4 at 2, again at 6
    start, length = 2, 4
    n = len(tokens)
    weights = causal_uniform(n).clone()
    for i in range(start + length, start + 2 * length):  # second copy -> i - L + 1
        weights[i] = 0
        weights[i, i - length + 1] = 1
    assert induction_score(weights[None, None], start, length).item() == pytest.approx(1.0)
    assert prefix_matching_score(weights, tokens).item() == pytest.approx(1.0)
    # the same head scores low as a duplicate-token head, and vice versa
    assert duplicate_token_score(weights, tokens).item() == pytest.approx(0.0)
    duplicate = weights.clone()
    for i in range(start + length, start + 2 * length):
        duplicate[i] = 0
        duplicate[i, i - length] = 1
    assert duplicate_token_score(duplicate, tokens).item() == pytest.approx(1.0)
    assert induction_score(duplicate[None], start, length).item() == pytest.approx(0.0)


def test_uniform_baseline_equals_score_of_uniform_attention():
    tokens, starts, lengths = repeated_block_batch(5, 24, 50, 4, 10, torch.Generator().manual_seed(0))
    weights = causal_uniform(24)[None, None].expand(5, 2, 24, 24)
    scores = induction_score(weights, starts, lengths)
    assert scores.shape == (2,)
    assert scores[0].item() == pytest.approx(uniform_induction_baseline(starts, lengths), rel=1e-6)
    assert uniform_induction_baseline(2, 4) == pytest.approx(sum(1 / (i + 1) for i in range(6, 10)) / 4)


def test_repeated_block_batch_layout_and_mask():
    tokens, starts, lengths = repeated_block_batch(16, 24, 64, 6, 12, torch.Generator().manual_seed(1))
    assert tokens.shape == (16, 24) and torch.all(starts + 2 * lengths == 24)
    for b in range(16):
        s, n = int(starts[b]), int(lengths[b])
        assert torch.equal(tokens[b, s : s + n], tokens[b, s + n :])
    mask = repeated_half_mask(24, starts, lengths)
    assert mask.shape == (16, 23)
    assert torch.all(mask.sum(1) == lengths - 1)  # the first token of the copy is unpredictable
    with pytest.raises(ValueError, match="max_block"):
        repeated_block_batch(1, 10, 5, 3, 6)


def test_bad_inputs_name_expected_and_given():
    with pytest.raises(ValueError, match="square"):
        previous_token_score(torch.ones(3, 4) / 4)
    with pytest.raises(ValueError, match="shape"):
        attention_entropy(torch.ones(3))
    with pytest.raises(ValueError, match="first_start"):
        induction_score(causal_uniform(6)[None], 2, 3)
    with pytest.raises(ValueError, match="tokens"):
        duplicate_token_score(uniform(), torch.arange(T + 1))


def tiny_model(seed: int = 0) -> AttentionOnlyTransformer:
    torch.manual_seed(seed)
    return AttentionOnlyTransformer(AttentionOnlyConfig(vocab_size=11, seq_len=9, d_model=16,
                                                        num_heads=4, num_layers=2))


def test_ablate_heads_equals_zeroing_that_head_by_hand():
    model = tiny_model().eval()
    tokens = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(0))
    captured = {}
    projection = model.transformer.blocks[1].attn.out_proj
    handle = projection.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0].clone()))
    with torch.no_grad():
        intact = model(tokens)
    handle.remove()
    concat = captured["x"]  # (B, T, H * d_head) entering W_O of layer 1
    zeroed = concat.clone()
    zeroed[..., 2 * 4 : 3 * 4] = 0  # head 2 of 4, d_head = 4
    with torch.no_grad(), ablate_heads(model, [(1, 2)]):
        ablated = model(tokens)
        # W_O applied to the zeroed input must be what the hooked projection produced
        assert torch.allclose(projection(concat), projection(zeroed))
    assert not torch.allclose(intact, ablated)
    with torch.no_grad():
        assert torch.equal(model(tokens), intact)  # hooks removed on exit
    with pytest.raises(ValueError, match="out of range"):
        with ablate_heads(model, [(2, 0)]):
            pass


def test_skip_layers_and_effects():
    model = tiny_model().eval()
    tokens = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), skip_layers(model, [0, 1]):
        skipped = model(tokens)
        body = model.transformer
        expected = model.lm_head(body.final_norm(body.token_emb(tokens)
                                                 + body.pos_emb(torch.arange(9))))
    assert torch.allclose(skipped, expected, atol=1e-6)
    with torch.no_grad():
        reference = model(tokens)

    def metric() -> float:
        return (model(tokens) - reference).abs().mean().item()

    effects = head_ablation_effects(model, metric, layers=[1])
    assert effects.shape == (2, 4) and torch.isnan(effects[0]).all() and (effects[1] > 0).all()
    layer_effects = layer_ablation_effects(model, metric)
    assert layer_effects.shape == (2,) and (layer_effects > 0).all()


def test_antecedent_preference():
    rows = torch.tensor([[0.5, 0.2, 0.3]])
    assert torch.allclose(antecedent_preference(rows, 0, 1), torch.tensor([0.3]))


@pytest.mark.slow
def test_hook_points_of_the_real_models(encoder, decoder):
    bert, _ = encoder
    projections = head_output_projections(bert)
    assert len(projections) == 6 and projections[0][1] == 12
    assert projections[0][0] is bert.encoder.layer[0].attention.output.dense
    llama, _ = decoder
    projections = head_output_projections(llama)
    assert len(projections) == 30 and projections[0][1] == 9
    assert projections[3][0] is llama.model.layers[3].self_attn.o_proj


@pytest.mark.slow
def test_ablating_a_minilm_head_changes_only_later_layers(encoder):
    model, tokenizer = encoder
    batch = tokenizer("The cat sat on the mat.", return_tensors="pt")
    with torch.no_grad():
        intact = model(**batch, output_hidden_states=True).hidden_states
        with ablate_heads(model, [(3, 5)]):
            ablated = model(**batch, output_hidden_states=True).hidden_states
    for layer in range(4):  # embeddings + outputs of layers 0..2: untouched
        assert torch.equal(intact[layer], ablated[layer])
    assert not torch.allclose(intact[4], ablated[4], atol=1e-4)


def test_word_token_index_uses_offsets():
    from transformers import AutoTokenizer

    from course_utils.analysis import word_token_index
    from course_utils.models import encoder_dir, quiet

    with quiet():
        tokenizer = AutoTokenizer.from_pretrained(encoder_dir())
    text = "Its owner said: The Animal didn't cross because it was tired."
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert tokens[word_token_index(tokenizer, text, "animal")] == "animal"  # case-insensitive
    assert tokens[word_token_index(tokenizer, text, "it")] == "it"  # whole word, not "its"
    assert word_token_index(tokenizer, text, "owner") == 2  # [CLS] counted
    piece = word_token_index(tokenizer, "unbelievably tired", "unbelievably")
    assert piece == 1  # a word split into pieces gives its first piece
    with pytest.raises(ValueError, match="does not occur"):
        word_token_index(tokenizer, text, "zebra")


def test_flip_summary_counts_sign_flips_and_picks_the_largest():
    from course_utils.analysis import flip_summary

    first = torch.tensor([[0.2, 0.1, -0.3], [0.05, 0.4, 0.0]])
    second = torch.tensor([[-0.1, -0.5, 0.2], [0.1, -0.1, -0.2]])
    summary = flip_summary(first, second)
    assert summary["count"] == 3  # (0, 0), (0, 1), (1, 1); 0.0 is not positive
    assert (summary["layer"], summary["head"]) == (0, 1)
    assert summary["change"] == pytest.approx(0.6)
    assert summary["mean_abs_change"] == pytest.approx(float((first - second).abs().mean()))
    none = flip_summary(second.abs(), second.abs())
    assert none["count"] == 0 and none["layer"] is None and none["change"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        flip_summary(first, second[0])


# ---- notebook 12: the induction score without the untrained last position, mean-ablation
def test_induction_score_can_leave_out_the_last_query_of_the_second_copy():
    from course_utils.analysis import induction_score as score
    from course_utils.analysis import uniform_induction_baseline as baseline

    start, length, n = 2, 4, 10  # block at 2..5, again at 6..9; the last query is 9
    weights = causal_uniform(n).clone()
    for i in range(start + length, start + 2 * length - 1):  # every query but the last
        weights[i] = 0
        weights[i, i - length + 1] = 1
    assert score(weights[None], start, length, exclude_last=True).item() == pytest.approx(1.0)
    expected_all = (3 + 1 / n) / 4  # the last query is uniform: 1/10 on its induction key
    assert score(weights[None], start, length).item() == pytest.approx(expected_all)
    # the maps of tokens[:, :-1] (one position shorter) are enough when the last is left out
    short = weights[: n - 1, : n - 1]
    assert score(short[None], start, length, exclude_last=True).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="first_start"):
        score(short[None], start, length)
    with pytest.raises(ValueError, match="block_len >= 2"):
        score(weights[None], 2, 1, exclude_last=True)
    assert baseline(start, length, exclude_last=True) == pytest.approx(sum(1 / (i + 1) for i in range(6, 9)) / 3)
    uniform = causal_uniform(n - 1)[None]
    assert score(uniform, start, length, exclude_last=True).item() == pytest.approx(
        baseline(start, length, exclude_last=True))


def test_mean_ablation_puts_the_batch_mean_in_the_head_slice():
    from course_utils.analysis import head_output_means

    model = tiny_model().eval()
    tokens = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(0))
    projection = model.transformer.blocks[1].attn.out_proj
    captured = {}
    handle = projection.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0].clone()))
    with torch.no_grad():
        model(tokens)
    handle.remove()
    means = head_output_means(model, tokens)
    assert [tuple(m.shape) for m in means] == [(9, 16), (9, 16)]
    torch.testing.assert_close(means[1], captured["x"].mean(0))
    flat = head_output_means(model, tokens, per_position=False)
    torch.testing.assert_close(flat[1], captured["x"].mean((0, 1)))

    replaced = captured["x"].clone()
    replaced[..., 2 * 4 : 3 * 4] = captured["x"].mean(0)[:, 2 * 4 : 3 * 4]  # head 2 -> its mean
    outputs = {}
    handle = projection.register_forward_hook(lambda m, a, out: outputs.setdefault("y", out.clone()))
    with torch.no_grad(), ablate_heads(model, [(1, 2)], means=means):
        model(tokens)
    handle.remove()
    torch.testing.assert_close(outputs["y"], projection(replaced))
    # one sequence is its own mean: mean-ablating every head changes nothing
    one = tokens[:1]
    with torch.no_grad():
        intact = model(one)
        with ablate_heads(model, [(0, h) for h in range(4)] + [(1, h) for h in range(4)],
                          means=head_output_means(model, one)):
            torch.testing.assert_close(model(one), intact)
    with pytest.raises(ValueError, match="one tensor per layer"):
        with ablate_heads(model, [(1, 2)], means=means[:1]):
            pass


@pytest.mark.parametrize("family", ["distilbert", "roberta", "gpt2", "qwen2"])
def test_ablation_hooks_on_every_family(family):
    """Head and layer ablation find the heads and blocks of any supported family (random
    weights, ``tests.standins``): ablating head (1, 0) leaves layer 0's output untouched and
    changes layer 1's; ablating no head changes nothing; skipping a block changes the output."""
    from course_utils import families
    from tests.standins import build_model

    model = build_model(family, 500, seed=0, head=False)
    view = families.describe(model)
    projections = head_output_projections(model)
    assert [p[1] for p in projections] == [view.n_heads] * view.n_layers
    assert projections[1][0] is families.output_projection(model, 1)
    ids = torch.randint(5, 500, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        intact = model(input_ids=ids, output_hidden_states=True).hidden_states
        with ablate_heads(model, []):
            same = model(input_ids=ids, output_hidden_states=True).hidden_states
        with ablate_heads(model, [(1, 0)]):
            ablated = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert all(torch.equal(a, b) for a, b in zip(intact, same, strict=True))
    assert torch.equal(intact[1], ablated[1])
    assert not torch.allclose(intact[2], ablated[2], atol=1e-5)
    effects = layer_ablation_effects(
        model, lambda: model(input_ids=ids).last_hidden_state.abs().mean().item())
    assert effects.shape == (view.n_layers,) and (effects != 0).all()
