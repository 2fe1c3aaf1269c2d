"""The fixed trigger patch behind ``patched:<domain>`` (the offline NTL OOD domain).

The patch is a random 6x6 colour square from a fixed seed, independent of the run seed, so a
teacher trained on ``patched:mnist`` under seed 0 sees the same trigger as a student under seed 7.
"""

from __future__ import annotations

import torch

PATCHED_PREFIX = "patched:"
PATCH_SIZE = 6
PATCH_SEED = 20250707


def patch_uint8() -> torch.Tensor:
    """(3, 6, 6) uint8: the trigger, identical on every call and machine."""
    g = torch.Generator().manual_seed(PATCH_SEED)
    return torch.randint(0, 256, (3, PATCH_SIZE, PATCH_SIZE), generator=g, dtype=torch.int64).to(torch.uint8)


def patch_region(size: int = 32) -> tuple[slice, slice]:
    """(rows, cols) of the patch: the bottom-right corner."""
    return slice(size - PATCH_SIZE, size), slice(size - PATCH_SIZE, size)


def stamp_patch(x: torch.Tensor) -> torch.Tensor:
    """A copy of (N, 3, H, W) images with the patch stamped; uint8 or float in [0, 1]."""
    out = x.clone()
    p = patch_uint8()
    rows, cols = patch_region(x.shape[-1])
    out[..., rows, cols] = p.to(x.dtype) if x.dtype == torch.uint8 else p.to(x.dtype) / 255.0
    return out
