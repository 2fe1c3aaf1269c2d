"""CIFAR-10 <-> STL-10 on their 9 shared classes, as the NTL literature pairs them.

CIFAR-10 has frog, STL-10 has monkey; the other nine classes are the same objects under two
label orders. ``cifar9`` and ``stl9`` drop the unshared class and relabel both datasets into one
order (CIFAR's, without frog): airplane, automobile (STL "car"), bird, cat, deer, dog, horse,
ship, truck. A teacher trained on ``cifar9`` therefore has a 9-way head, and its labels mean the
same thing on ``stl9``. Both are derived from the cached full datasets, so they cost no disk.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.data.domain import Split
from core.data.registry import load_split, register_domain

SHARED_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "horse", "ship", "truck")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
_SAME = {"car": "automobile"}  # STL's name for CIFAR's class


def _to_shared(classes: tuple[str, ...]) -> list[int]:
    """Per original label: its index in ``SHARED_CLASSES``, or -1 when the class is not shared."""
    return [SHARED_CLASSES.index(_SAME.get(c, c)) if _SAME.get(c, c) in SHARED_CLASSES else -1 for c in classes]


CIFAR10_TO_9 = _to_shared(CIFAR10_CLASSES)  # frog (6) -> -1
STL10_TO_9 = _to_shared(STL10_CLASSES)  # monkey (7) -> -1


def remap(split: Split, mapping: list[int]) -> Split:
    """Keep the samples whose class is shared, relabelled; order within each split is kept."""
    table = torch.tensor(mapping, dtype=torch.int64)
    out: list[torch.Tensor] = []
    for x, y in ((split[0], split[1]), (split[2], split[3])):
        new = table[y]
        keep = new >= 0
        out += [x[keep], new[keep]]
    return out[0], out[1], out[2], out[3]


@register_domain("cifar9", offline=False, num_classes=9, cached=False,
                 description="CIFAR-10 on the 9 classes shared with STL-10 (no frog), labels in the shared order")
def build_cifar9(root: Path, seed: int) -> Split:
    return remap(load_split("cifar10", root, seed), CIFAR10_TO_9)


@register_domain("stl9", offline=False, num_classes=9, cached=False,
                 description="STL-10 on the 9 classes shared with CIFAR-10 (no monkey), labels in the shared order")
def build_stl9(root: Path, seed: int) -> Split:
    return remap(load_split("stl10", root, seed), STL10_TO_9)
