"""The DomainData container and small image helpers every domain builder shares."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 32


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == has no single truth value
class DomainData:
    """One image domain: 3x32x32 float32 images in [0, 1] and int64 labels 0..9."""

    name: str
    train_x: torch.Tensor  # (N, 3, 32, 32) float32 in [0, 1]
    train_y: torch.Tensor  # (N,) int64 in 0..9
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int = 10


# Builders return images as uint8 (N, 3, 32, 32). Every load path (fresh build or cache hit)
# goes through the same uint8 -> float conversion, so both give bit-identical tensors.
Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # train_x, train_y, test_x, test_y


def sub_seed(seed: int, tag: str) -> int:
    """A stable 63-bit seed for (run seed, purpose) so domains never share a random stream."""
    return (zlib.crc32(tag.encode()) * 1_000_003 + int(seed)) % (2**63 - 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8, rounding (not truncating) so 1.0 stays 255."""
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32) / 255.0


def grey_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) -> (N, 3, H, W), contiguous (not an expand view)."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.repeat(1, 3, 1, 1)


def pad_to(x: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Centre-pad (N, C, h, w) with zeros to size x size (MNIST 28 -> 32 like LeNet's input)."""
    h, w = x.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))


def fit_like_mnist(x: torch.Tensor) -> torch.Tensor:
    """Frame-filling digits (UCI 8x8, USPS 16x16) -> MNIST proportions at 32x32.

    An MNIST digit sits in a 20x20 box centred in 28x28, i.e. 20 px of a 32 px frame after
    the 2 px pad; resizing to 20 and padding to 32 gives the same framing.
    """
    x = F.interpolate(x.float(), size=(20, 20), mode="bilinear", align_corners=False)
    return pad_to(x)


def stratified_split(y: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled, per-class split -> (train_idx, test_idx). Each class keeps test_frac in test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_frac))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    # Interleave classes: a permutation of the union, so no consumer sees class-sorted order.
    train_idx = rng.permutation(np.concatenate(train))
    test_idx = rng.permutation(np.concatenate(test))
    return train_idx, test_idx
