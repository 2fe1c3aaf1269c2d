"""``cuti``: CUTI-domain (Wang et al., CVPR 2023).

On odd steps the OOD half's feature map after every block is re-styled with the ID half's
per-instance channel mean/std passed through freshly drawn random 1x1 maps and a sigmoid
(intermediate domains); loss ``KL_id - min(1, alpha * KL_ood)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from core.teachers.base import TEACHER_KINDS, TeacherKind, kl_onehot

if TYPE_CHECKING:
    from core.models import Classifier


def cuti_loss(
    logits_id: torch.Tensor, y_id: torch.Tensor, logits_ood: torch.Tensor, y_ood: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``KL_id - min(1, alpha * KL_ood)``."""
    return kl_onehot(logits_id, y_id) - (alpha * kl_onehot(logits_ood, y_ood)).clamp(max=1.0)


def instance_stats(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance channel mean and std of (N, C, H, W) feature maps, shaped (N, C, 1, 1)."""
    flat = x.flatten(2)
    mean = flat.mean(2)[..., None, None]
    std = (flat.var(2) + eps).sqrt()[..., None, None]
    return mean, std


@contextlib.contextmanager
def cuti_restyle(model: Classifier, n_id: int, generator: torch.Generator) -> Iterator[None]:
    """While active, every block's output ``[id; ood]`` (first ``n_id`` rows ID) becomes
    ``[id; ood * sigmoid(W_s std_id) + sigmoid(W_m mean_id)]`` with W_s, W_m fresh random 1x1 maps
    (uniform in +-1/sqrt(C), the default Conv2d init) drawn from ``generator`` at every call."""

    def hook(_module: nn.Module, _inputs: object, out: torch.Tensor) -> torch.Tensor:
        if out.dim() != 4 or out.shape[0] != 2 * n_id or out.shape[2] * out.shape[3] < 2:
            return out  # no spatial statistics on a 1x1 map
        c = out.shape[1]
        bound = 1.0 / math.sqrt(c)
        w = (torch.rand(2, c, c, generator=generator) * 2 - 1) * bound
        w = w.to(out.device, out.dtype)
        mean, std = instance_stats(out[:n_id])
        new_mean = torch.sigmoid(torch.einsum("oc,ncij->noij", w[0], mean))
        new_std = torch.sigmoid(torch.einsum("oc,ncij->noij", w[1], std))
        return torch.cat([out[:n_id], out[n_id:] * new_std + new_mean])

    handles = [block.register_forward_hook(hook) for block in model.blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@TEACHER_KINDS.register("cuti")
class CUTIDomain(TeacherKind):
    uses_ood_images = True

    def loss(self, xb: torch.Tensor, yb: torch.Tensor, step: int, *, detail: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        xo, yo = self.next_ood_batch(len(xb))
        n = len(xb)
        restyle = cuti_restyle(self.model, n, self.generator) if step % 2 == 1 else contextlib.nullcontext()
        with restyle:
            logits = self.model(torch.cat([xb, xo]))
        loss = cuti_loss(logits[:n], yb, logits[n:], yo, self.tc.alpha)
        if not detail:
            return loss, {}
        ld = logits.detach()
        return loss, {"kl_id": kl_onehot(ld[:n], yb), "kl_ood": kl_onehot(ld[n:], yo)}
