"""``ntl-source``: source-only NTL. The ``ntl-target`` loss, but the OOD half is synthesised from
the ID batch with ``teacher.source_augs`` (stamped patches of random size/position/colour, colour
shift, blur, noise) and keeps the ID labels; the real OOD domain is only used for reporting."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from core.errors import BadInput
from core.teachers.base import TEACHER_KINDS
from core.teachers.kinds.ntl_target import TargetSpecifiedNTL


def _aug_patch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    out = x.clone()
    sizes = torch.randint(4, 9, (n,), generator=g)
    for i in range(n):
        s = int(sizes[i])
        r = int(torch.randint(0, h - s + 1, (1,), generator=g))
        q = int(torch.randint(0, w - s + 1, (1,), generator=g))
        out[i, :, r : r + s, q : q + s] = torch.rand(c, s, s, generator=g).to(x.device)
    return out


def _aug_color(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, c = x.shape[:2]
    gain = (0.4 + 0.8 * torch.rand(n, c, 1, 1, generator=g)).to(x.device)
    offset = (0.2 + 0.4 * torch.rand(n, c, 1, 1, generator=g)).to(x.device)
    return (x * gain + offset * (1 - x)).clamp(0, 1)


def _aug_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    c = x.shape[1]
    sigma = 0.8 + 1.2 * float(torch.rand(1, generator=g))
    t = torch.arange(5, dtype=x.dtype, device=x.device) - 2
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    k = (k1[:, None] * k1[None, :]).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=c)


def _aug_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    sigma = (0.1 + 0.2 * torch.rand(x.shape[0], 1, 1, 1, generator=g)).to(x.device)
    return (x + sigma * torch.randn(x.shape, generator=g).to(x.device)).clamp(0, 1)


SOURCE_AUGS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "patch": _aug_patch,
    "color": _aug_color,
    "blur": _aug_blur,
    "noise": _aug_noise,
}


def synthesize_ood(x: torch.Tensor, augs: list[str], generator: torch.Generator) -> torch.Tensor:
    """Each image gets every listed augmentation with probability 1/2 (at least one), giving a
    neighbourhood of shifted domains around the ID data."""
    if not augs:
        raise BadInput("teacher.source_augs is empty; ntl-source needs at least one", field="teacher.source_augs")
    n = x.shape[0]
    chosen = torch.rand(n, len(augs), generator=generator) < 0.5
    forced = torch.randint(0, len(augs), (n,), generator=generator)
    chosen[torch.arange(n), forced] = True
    out = x
    for j, name in enumerate(augs):
        mask = chosen[:, j].to(x.device)
        if mask.any():
            out = out.clone() if out is x else out
            out[mask] = SOURCE_AUGS[name](out[mask], generator)
    return out


@TEACHER_KINDS.register("ntl-source")
class SourceOnlyNTL(TargetSpecifiedNTL):
    uses_ood_images = False

    def ood_half(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return synthesize_ood(xb.cpu(), list(self.tc.source_augs), self.generator).to(self.device), yb
