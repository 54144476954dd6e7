"""Used in notebook 08: an image becomes tokens, a ViT patch embedding from scratch.

The image is cut into non-overlapping ``patch × patch`` squares; each square is flattened
and projected to ``d_model`` by one shared linear map; a learned ``[CLS]`` vector is put in
front and learned position vectors are added. A ``Conv2d`` with ``kernel_size = stride =
patch`` *is* that shared linear map applied to every square, which is how ViT implements
it; ``patchify`` + ``patch_embed_unfold`` does the same with an explicit matrix product.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _check_images(images: torch.Tensor, patch_size: int, channels: int | None = None) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
    _, c, h, w = images.shape
    if channels is not None and c != channels:
        raise ValueError(f"expected {channels} channels, got {c} (images of shape {tuple(images.shape)})")
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"image height and width must be multiples of patch_size={patch_size}, got {h}×{w}"
        )


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, C·p·p)``: one flattened patch per row, row-major order.

    Each row lists channel 0's ``p × p`` pixels, then channel 1's, … — the same order as a
    ``Conv2d`` weight ``(d, C, p, p)`` flattened to ``(d, C·p·p)``.
    """
    _check_images(images, patch_size)
    columns = nn.functional.unfold(images, kernel_size=patch_size, stride=patch_size)  # (B, C·p·p, N)
    return columns.transpose(1, 2)  # (B, N, C·p·p)


def patch_embed_unfold(
    images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, patch_size: int
) -> torch.Tensor:
    """Patch embeddings as a matrix product: ``patchify(images) @ Wᵀ + b``, ``(B, N, d)``.

    ``weight`` is a Conv2d weight ``(d, C, p, p)`` (or already flat ``(d, C·p·p)``).
    """
    flat_weight = weight.reshape(weight.shape[0], -1)  # (d, C·p·p)
    patches = patchify(images, patch_size)  # (B, N, C·p·p)
    if patches.shape[-1] != flat_weight.shape[1]:
        raise ValueError(
            f"weight expects patches of {flat_weight.shape[1]} values, got {patches.shape[-1]} "
            f"(channels × {patch_size}²)"
        )
    out = patches @ flat_weight.T  # (B, N, d)
    return out if bias is None else out + bias


class PatchEmbedding(nn.Module):
    """Images ``(B, C, H, W)`` -> tokens ``(B, 1 + N, d_model)``: ``[CLS]`` then N patches.

    ``N = (H / patch) · (W / patch)``; a 224 × 224 image with 16 × 16 patches gives the
    196 + 1 tokens of ViT-Base.
    """

    def __init__(self, image_size: int = 64, patch_size: int = 16, in_channels: int = 3, d_model: int = 32) -> None:
        super().__init__()
        for name, value in (("image_size", image_size), ("patch_size", patch_size),
                            ("in_channels", in_channels), ("d_model", d_model)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size, self.in_channels = image_size, patch_size, in_channels
        self.n_patches = (image_size // patch_size) ** 2
        # One linear map shared by every patch: a convolution whose stride equals its kernel.
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.position = nn.Parameter(torch.randn(1, 1 + self.n_patches, d_model) * 0.02)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, N, d)`` patch embeddings, without [CLS] or positions."""
        _check_images(images, self.patch_size, self.in_channels)
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"expected {self.image_size}×{self.image_size} images, got "
                f"{images.shape[-2]}×{images.shape[-1]}"
            )
        grid = self.proj(images)  # (B, d, H/p, W/p)
        return grid.flatten(2).transpose(1, 2)  # (B, N, d), patches in row-major order

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_tokens(images)  # (B, N, d)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (B, 1, d)
        return torch.cat([cls, tokens], dim=1) + self.position  # (B, 1 + N, d)


def synthetic_image(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A deterministic RGB test image ``(3, size, size)`` in [0, 1]: sky, sun, house, grass."""
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.zeros((3, size, size))
    image[0], image[1], image[2] = 0.45 + 0.3 * y, 0.7 + 0.2 * y, 0.95 - 0.1 * y  # sky gradient
    sun = (x - 0.78) ** 2 + (y - 0.2) ** 2 < 0.012
    image[:, sun] = np.array([1.0, 0.85, 0.2])[:, None]
    grass = y > 0.72
    image[:, grass] = np.array([0.2, 0.6, 0.2])[:, None]
    house = (x > 0.15) & (x < 0.45) & (y > 0.45) & (y <= 0.72)
    image[:, house] = np.array([0.75, 0.3, 0.2])[:, None]
    roof = (y > 0.3) & (y <= 0.45) & (np.abs(x - 0.3) < (y - 0.3) * 1.0)
    image[:, roof] = np.array([0.45, 0.15, 0.1])[:, None]
    image += rng.normal(0, 0.02, image.shape)  # a little texture
    return torch.tensor(np.clip(image, 0.0, 1.0), dtype=torch.float32)
