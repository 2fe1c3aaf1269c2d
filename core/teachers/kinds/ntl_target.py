"""``ntl-target``: target-specified NTL (Wang et al., ICLR 2022).

Reference form ``L = KL_id - min(1, alpha * KL_ood) * min(1, beta * MMD(f_id, f_ood))`` on a joint
ID+OOD batch (shared BatchNorm statistics, as the reference trains it); ``f`` are penultimate
features and MMD is the multi-bandwidth Gaussian one. ``KL(p, onehot_y)`` is the per-sample KL
divergence to the one-hot label averaged over the batch (equal to the cross-entropy). The reference
averages over batch *and* classes (KLDivLoss 'mean'), i.e. divides by the number of classes; that
only moves the point where the OOD clamp engages (alpha * KL_ood >= 1), here a cross-entropy of
1/alpha = 10 nats.
"""

from __future__ import annotations

import torch

from core.teachers.base import TEACHER_KINDS, TeacherKind, kl_onehot


def mmd(f1: torch.Tensor, f2: torch.Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> torch.Tensor:
    """Biased multi-bandwidth Gaussian MMD^2 between feature sets (N, D) and (M, D).

    Bandwidths are ``base * kernel_mul**k`` around the mean pairwise squared distance (detached),
    as in the reference implementation. Identical sets give exactly 0.
    """
    f1 = f1.flatten(1).float()
    f2 = f2.flatten(1).float()
    n, m = f1.shape[0], f2.shape[0]
    total = torch.cat([f1, f2])
    d2 = torch.cdist(total, total).pow(2)
    count = (n + m) * (n + m - 1)
    base = d2.detach().sum() / max(count, 1)
    base = base.clamp_min(1e-12) / kernel_mul ** (kernel_num // 2)
    k = sum(torch.exp(-d2 / (base * kernel_mul**i)) for i in range(kernel_num))
    assert isinstance(k, torch.Tensor)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def ntl_loss(
    logits_id: torch.Tensor,
    y_id: torch.Tensor,
    logits_ood: torch.Tensor,
    y_ood: torch.Tensor,
    f_id: torch.Tensor,
    f_ood: torch.Tensor,
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """``KL_id - min(1, alpha*KL_ood) * min(1, beta*MMD(f_id, f_ood))`` (a clamped factor has no gradient)."""
    kl_ood = (alpha * kl_onehot(logits_ood, y_ood)).clamp(max=1.0)
    dist = (beta * mmd(f_id, f_ood)).clamp(max=1.0)
    return kl_onehot(logits_id, y_id) - kl_ood * dist


@TEACHER_KINDS.register("ntl-target")
class TargetSpecifiedNTL(TeacherKind):
    """The OOD half of each batch is real images of the OOD domain, with their labels."""

    uses_ood_images = True

    def ood_half(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.next_ood_batch(len(xb))

    def loss(self, xb: torch.Tensor, yb: torch.Tensor, step: int, *, detail: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        xo, yo = self.ood_half(xb, yb)
        feats = self.model.features(torch.cat([xb, xo]))
        logits = self.model.head(feats)
        n, tc = len(xb), self.tc
        loss = ntl_loss(logits[:n], yb, logits[n:], yo, feats[:n], feats[n:], tc.alpha, tc.beta)
        if not detail:
            return loss, {}
        ld, fd = logits.detach(), feats.detach()
        return loss, {"kl_id": kl_onehot(ld[:n], yb), "kl_ood": kl_onehot(ld[n:], yo), "mmd": mmd(fd[:n], fd[n:])}
