"""``mnist-color``: MNIST-M-like digits, |texture - digit| on generated colour textures.

MNIST-M blends each digit onto a BSDS500 photo crop as |background - digit|: the stroke shows
the background's colour inverted, so shape contrast survives while the colour statistics change.
Offline we replace the photos with seeded procedural textures (multi-scale smooth noise plus a
linear colour gradient), which keeps the shift but needs no download.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from core.data.domain import IMAGE_SIZE, Split, sub_seed, to_float, to_uint8
from core.data.mnist import mnist_split, to_rgb32
from core.data.registry import register_domain


def textures(n: int, g: torch.Generator, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(n, 3, size, size) float textures in [0, 1]: smooth noise at 3 scales + a gradient."""
    noise = torch.zeros(n, 3, size, size)
    weights = torch.rand(n, 3, 1, 1, 1, generator=g)  # per image, per scale
    weights = weights / weights.sum(1, keepdim=True)
    for i, res in enumerate((2, 4, 8)):
        low = torch.rand(n, 3, res, res, generator=g)
        noise += weights[:, i] * F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    # Linear ramp in a random direction between two random colours.
    theta = torch.rand(n, generator=g) * 2 * math.pi
    coords = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    t = (torch.cos(theta)[:, None, None] * xx + torch.sin(theta)[:, None, None] * yy) * 0.5 + 0.5
    c0, c1 = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)
    grad = c0 + (c1 - c0) * t.clamp(0, 1)[:, None]
    mix = torch.rand(n, 1, 1, 1, generator=g)
    tex = mix * noise + (1 - mix) * grad
    # Averaging random fields pulls values towards 0.5, where |t - digit| has no contrast;
    # stretching each channel to [0, 1] restores photo-like spread (dark and bright regions).
    lo, hi = tex.amin((2, 3), keepdim=True), tex.amax((2, 3), keepdim=True)
    return ((tex - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)


def blend(digits: torch.Tensor, tex: torch.Tensor) -> torch.Tensor:
    """MNIST-M's rule: |texture - digit| per channel, digits grey (n, 3, H, W) in [0, 1]."""
    return (tex - digits).abs()


@register_domain("mnist-color", offline=True, description="MNIST digits on procedural colour textures (MNIST-M-like)")
def build_mnist_color(root: Path, seed: int) -> Split:
    tx, ty, vx, vy = mnist_split()
    g = torch.Generator().manual_seed(sub_seed(seed, "mnist-color"))
    train = to_uint8(blend(to_float(to_rgb32(tx)), textures(len(tx), g)))
    test = to_uint8(blend(to_float(to_rgb32(vx)), textures(len(vx), g)))
    return train, torch.from_numpy(ty), test, torch.from_numpy(vy)
