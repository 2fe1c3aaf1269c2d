"""``uci-digits``: scikit-learn's 1797 real 8x8 UCI digits, framed like MNIST at 32x32."""

from __future__ import annotations

from pathlib import Path

import torch

from core.data.domain import Split, fit_like_mnist, grey_to_rgb, stratified_split, to_uint8
from core.data.registry import register_domain

SPLIT_SEED = 4321
TEST_FRAC = 0.2


@register_domain("uci-digits", offline=True, description="1797 real 8x8 UCI digits (scikit-learn)")
def build_uci(root: Path, seed: int) -> Split:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0  # values 0..16
    y = torch.from_numpy(d.target).long()
    img = to_uint8(grey_to_rgb(fit_like_mnist(x)))
    tr, te = stratified_split(d.target, TEST_FRAC, SPLIT_SEED)
    tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
    return img[tr_t], y[tr_t], img[te_t], y[te_t]
