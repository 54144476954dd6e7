"""Patch embedding from scratch (notebook 08) = unfold + linear = transformers' ViTEmbeddings."""

from __future__ import annotations

import pytest
import torch
from transformers import ViTConfig
from transformers.models.vit.modeling_vit import ViTEmbeddings

from course_utils.vision import PatchEmbedding, patch_embed_unfold, patchify, synthetic_image


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))


def test_patchify_rows_are_the_patches_in_row_major_order(images):
    p = 16
    patches = patchify(images, p)  # (2, 2*3, 3*16*16)
    assert patches.shape == (2, 6, 3 * p * p)
    for index in range(6):
        row, col = divmod(index, 48 // p)
        expected = images[:, :, row * p:(row + 1) * p, col * p:(col + 1) * p].reshape(2, -1)
        assert torch.equal(patches[:, index], expected), f"patch {index}"


def test_conv_equals_unfold_plus_linear():
    torch.manual_seed(0)
    embedder = PatchEmbedding(image_size=32, patch_size=8, in_channels=3, d_model=24)
    images = torch.rand(3, 3, 32, 32)
    from_conv = embedder.patch_tokens(images)
    from_unfold = patch_embed_unfold(images, embedder.proj.weight, embedder.proj.bias, 8)
    assert from_conv.shape == (3, 16, 24)
    torch.testing.assert_close(from_conv, from_unfold, atol=1e-5, rtol=0)
    # A projection with the channels flattened in the wrong order must not match.
    wrong = embedder.proj.weight.permute(0, 2, 3, 1)  # (d, p, p, C)
    bad = patch_embed_unfold(images, wrong.reshape(24, -1), embedder.proj.bias, 8)
    assert (bad - from_conv).abs().max() > 1e-2


def test_cls_and_positions_match_transformers_vit_embeddings():
    torch.manual_seed(0)
    ours = PatchEmbedding(image_size=32, patch_size=8, in_channels=3, d_model=24)
    torch.nn.init.normal_(ours.cls_token)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=24,
                       hidden_dropout_prob=0.0)
    theirs = ViTEmbeddings(config).eval()
    with torch.no_grad():
        theirs.cls_token.copy_(ours.cls_token)
        theirs.position_embeddings.copy_(ours.position)
        theirs.patch_embeddings.projection.weight.copy_(ours.proj.weight)
        theirs.patch_embeddings.projection.bias.copy_(ours.proj.bias)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), theirs(images), atol=1e-6, rtol=0)
        tokens = ours(images)
    assert tokens.shape == (2, 17, 24)
    cls = (ours.cls_token[0, 0] + ours.position[0, 0]).detach()  # (24,): same for every image
    torch.testing.assert_close(tokens[:, 0], cls.expand(2, -1))


def test_vit_base_token_count():
    assert PatchEmbedding(224, 16, 3, 8).n_patches == 196


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"image_size": 30, "patch_size": 16}, "multiple"), ({"d_model": 0}, "d_model"),
     ({"patch_size": True}, "patch_size")],
)
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatchEmbedding(**kwargs)


def test_bad_images_raise():
    embedder = PatchEmbedding(image_size=32, patch_size=16, in_channels=3, d_model=8)
    with pytest.raises(ValueError, match="expected 3 channels, got 1"):
        embedder(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="expected 32×32 images, got 48×48"):
        embedder(torch.rand(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify(torch.rand(3, 32, 32), 16)
    with pytest.raises(ValueError, match="multiples of patch_size=16"):
        patchify(torch.rand(1, 3, 40, 32), 16)
    with pytest.raises(ValueError, match="patches of 48 values"):
        patch_embed_unfold(torch.rand(1, 3, 32, 32), torch.rand(8, 48), None, 16)


def test_synthetic_image_is_deterministic_and_in_range():
    a, b = synthetic_image(64, seed=0), synthetic_image(64, seed=0)
    assert a.shape == (3, 64, 64) and torch.equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert not torch.equal(a, synthetic_image(64, seed=1))
    with pytest.raises(ValueError, match="at least 16"):
        synthetic_image(8)
