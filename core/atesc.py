"""ATEsc: Adversarial Trap Escaping (Hong et al., ICML 2025, arXiv 2507.04119).

For each synthetic batch, attack the teacher inside an L-inf ball and score how much its answer
moves. An NTL teacher is more robust on its OOD region than on its ID region, so:

- fragile samples (high score) are ID-like  -> normal KD;
- robust samples (low score) are OOD-like   -> a forgetting loss pushes the student away from
  the teacher's OOD knowledge.

``ATEsc.analyze`` runs once per generated batch (the attack is the expensive part); the trainer
reuses its ``SplitResult`` (mask and clean teacher logits) for every student step on that batch.
Every open choice is an ``ATEscConfig`` field: attack (eps, steps, step_size), score, split rule,
forgetting loss and weight, generator steering, warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.dfkd.base import GuidePlan, frozen_eval
from core.losses import forget_loss, kd_loss, kl_per_sample, reduce_per_sample

if TYPE_CHECKING:  # annotations only: importable without pydantic
    from core.config import ATEscConfig

__all__ = [
    "ATEsc",
    "attack",
    "auroc",
    "feature_split",
    "SplitResult",
    "Splitter",
    "forget_loss",
    "pgd_attack",
    "robustness_score",
    "two_means_threshold",
]

SCORES = ("flip", "shift", "margin", "rel-margin")
SPLITS = ("quantile", "threshold", "adaptive", "feature")


# ---------------------------------------------------------------------------------------------
# Attack
# ---------------------------------------------------------------------------------------------
def default_step_size(eps: float, steps: int) -> float:
    return 2.5 * eps / steps


def logits_and_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """(logits, penultimate features) in one forward for the registry's classifiers; features are
    None for a model without a ``features``/``head`` split."""
    features, head = getattr(model, "features", None), getattr(model, "head", None)
    if callable(features) and isinstance(head, nn.Module):
        f = features(x)
        return head(f), f
    return model(x), None


def attack(
    teacher: nn.Module, x: Tensor, eps: float, steps: int, step_size: float | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """PGD in the L-inf ball around ``x`` (clamped to [0, 1]); returns (x_adv, clean teacher logits,
    clean penultimate features or None).

    No random start, so ``steps=1`` is FGSM. At the clean point the gradient of
    KL(teacher(x) || teacher(x')) vanishes (x' = x is its minimum), so the first step ascends the
    cross-entropy to the teacher's clean top-1 (the FGSM objective); later steps ascend the KL.
    The first step's forward doubles as the clean forward. Only ``x_adv`` receives gradients; the
    teacher's parameters and ``.grad`` are untouched. The teacher runs in eval mode.
    """
    x = x.detach()
    with frozen_eval(teacher):
        if eps <= 0 or steps <= 0:
            with torch.no_grad():
                clean, feats = logits_and_features(teacher, x)
            return x.clone(), clean.detach(), feats
        alpha = step_size if step_size is not None else default_step_size(eps, steps)
        lo = (x - eps).clamp_(0.0, 1.0)
        hi = (x + eps).clamp_(0.0, 1.0)
        x_adv = x.clone()
        clean: Tensor | None = None
        clean_features: Tensor | None = None
        target: Tensor | None = None
        with torch.enable_grad():
            for i in range(steps):
                x_adv.requires_grad_(True)
                out, feats = logits_and_features(teacher, x_adv)
                if i == 0:
                    clean = out.detach()
                    clean_features = None if feats is None else feats.detach()
                    target = clean.argmax(dim=1)
                    loss = F.cross_entropy(out.float(), target, reduction="sum")
                else:
                    assert clean is not None
                    loss = kl_per_sample(clean, out).sum()
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = torch.minimum(torch.maximum(x_adv.detach() + alpha * grad.sign(), lo), hi)
        assert clean is not None
        return x_adv.detach(), clean, clean_features


def pgd_attack(teacher: nn.Module, x: Tensor, eps: float, steps: int, step_size: float | None = None) -> Tensor:
    """Untargeted L-inf PGD on the teacher's output: ``x_adv`` with ||x_adv - x||_inf <= eps, in [0, 1].

    Maximises KL(teacher(x) || teacher(x_adv)) (first step: CE to the clean top-1, see ``attack``).
    ``step_size`` defaults to ``2.5 * eps / steps``.
    """
    return attack(teacher, x, eps, steps, step_size)[0]


# ---------------------------------------------------------------------------------------------
# Scores and split rules
# ---------------------------------------------------------------------------------------------
def robustness_score(kind: str, clean_logits: Tensor, adv_logits: Tensor) -> Tensor:
    """Per-sample fragility (B,): higher = MORE FRAGILE (ID-like for an NTL teacher).

    - ``flip``: 1.0 where the top-1 class changed under attack, else 0.0;
    - ``shift``: KL(softmax(clean) || softmax(adv));
    - ``margin``: drop of the clean top-1's logit margin, (z_y - max_{j!=y} z_j) on clean minus the
      same quantity on adv, with y the clean top-1 (> clean margin when the top-1 flipped);
    - ``rel-margin``: that drop divided by the clean margin (1.0 = the attack erased the margin).
    """
    clean_logits = clean_logits.detach().float()
    adv_logits = adv_logits.detach().float()
    if kind == "flip":
        return (clean_logits.argmax(dim=1) != adv_logits.argmax(dim=1)).float()
    if kind == "shift":
        return kl_per_sample(clean_logits, adv_logits).clamp_min(0.0)
    if kind in ("margin", "rel-margin"):
        y = clean_logits.argmax(dim=1, keepdim=True)

        def margin(z: Tensor) -> Tensor:
            top = z.gather(1, y).squeeze(1)
            others = z.scatter(1, y, float("-inf"))
            return top - others.max(dim=1).values

        drop = margin(clean_logits) - margin(adv_logits)
        if kind == "margin":
            return drop
        # rel-margin: the share of the clean margin the attack removes. Generated images are less
        # saturated than real ones and lose more margin to the same eps; the ratio cancels that scale.
        return drop / margin(clean_logits).clamp_min(1e-3)
    raise ValueError(f"unknown robustness score {kind!r} (known: {', '.join(SCORES)})")


def _symlog1p(v: Tensor) -> Tensor:
    """sign(v) * log1p(|v|): log1p for non-negative scores, still defined for negative margins."""
    return torch.sign(v) * torch.log1p(v.abs())


def two_means_threshold(values: Tensor) -> float | None:
    """Optimal 1-D two-cluster split (Otsu = exact 1-D 2-means): the midpoint between the clusters.

    Returns None when the values are all equal (no structure to split).
    """
    v = values.detach().double().flatten()
    n = v.numel()
    if n < 2:
        return None
    s, _ = v.sort()
    if float(s[-1] - s[0]) <= 1e-12:
        return None
    csum = s.cumsum(0)
    total = csum[-1]
    k = torch.arange(1, n, dtype=torch.float64, device=s.device)
    left = csum[:-1] / k
    right = (total - csum[:-1]) / (n - k)
    between = k * (n - k) * (left - right) ** 2
    between = torch.where(s[1:] > s[:-1], between, torch.full_like(between, -1.0))
    i = int(between.argmax())
    return float((s[i] + s[i + 1]) / 2)


class Splitter:
    """Turns a fragility score (B,) into a fragile mask (bool, B). Stateful only for ``adaptive``.

    - ``quantile``: the ``round(fragile_share * B)`` most fragile samples (stable order on ties);
    - ``threshold``: ``score >= threshold``;
    - ``adaptive``: per batch, the two-means split point of ``log1p(score)`` (sign-preserving for
      negative margins), smoothed across batches ``t <- momentum * t + (1 - momentum) * t_batch``
      (the first batch sets it); a batch with all-equal scores keeps the previous point (or, before
      any, counts as all fragile: plain KD).
    """

    def __init__(self, cfg: ATEscConfig) -> None:
        if cfg.split not in SPLITS:
            raise ValueError(f"unknown split rule {cfg.split!r} (known: {', '.join(SPLITS)})")
        self.kind = cfg.split
        self.fragile_share = cfg.fragile_share
        self.threshold = cfg.threshold
        self.momentum = cfg.momentum
        self.split_point: float = 0.0  # adaptive: in log1p(score) space
        self.initialized = False

    @property
    def score_threshold(self) -> float | None:
        """The current split point in score units (adaptive / threshold), for display."""
        if self.kind == "threshold":
            return self.threshold
        if self.kind == "adaptive" and self.initialized:
            t = self.split_point
            return math.copysign(math.expm1(abs(t)), t)
        return None

    def split(self, score: Tensor) -> Tensor:
        score = score.detach().flatten()
        b = score.numel()
        if self.kind == "quantile":
            k = int(math.floor(self.fragile_share * b + 0.5))
            mask = torch.zeros(b, dtype=torch.bool, device=score.device)
            if k > 0:
                order = torch.argsort(score, descending=True, stable=True)
                mask[order[:k]] = True
            return mask
        if self.kind == "threshold":
            return score >= self.threshold
        # adaptive
        v = _symlog1p(score.double())
        t_batch = two_means_threshold(v)
        if t_batch is not None:
            if self.initialized:
                self.split_point = self.momentum * self.split_point + (1.0 - self.momentum) * t_batch
            else:
                self.split_point = t_batch
                self.initialized = True
        if not self.initialized:
            return torch.ones(b, dtype=torch.bool, device=score.device)
        return v >= self.split_point

    def state(self) -> dict[str, Tensor]:
        return {
            "split_point": torch.tensor(self.split_point, dtype=torch.float64),
            "initialized": torch.tensor(int(self.initialized), dtype=torch.int64),
        }

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        self.split_point = float(tensors["split_point"].double())
        self.initialized = bool(int(tensors["initialized"]))


def auroc(values: Tensor, positive: Tensor) -> float | None:
    """Area under the ROC curve of ``values`` for ``positive`` (bool) vs the rest (Mann-Whitney U,
    ties counted half); None when either group is empty."""
    v = values.detach().double().flatten()
    pos = positive.flatten().bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = torch.argsort(v)
    # 1-based ranks, averaged over runs of equal values
    _, inverse, counts = torch.unique_consecutive(v[order], return_inverse=True, return_counts=True)
    mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2
    ranks = torch.empty_like(v)
    ranks[order] = mean_rank[inverse]
    u = float(ranks[pos].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def two_means(features: Tensor, iters: int = 10) -> Tensor:
    """2-means on L2-normalised rows; returns the bool membership of the second cluster (B,).

    Deterministic: seeded with the row farthest from the mean and the row farthest from that one.
    """
    f = F.normalize(features.detach().float(), dim=1)
    c0 = f[torch.argmax(((f - f.mean(0)) ** 2).sum(1))]
    c1 = f[torch.argmax(((f - c0) ** 2).sum(1))]
    member = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
    for _ in range(iters):
        member = ((f - c1) ** 2).sum(1) < ((f - c0) ** 2).sum(1)
        if bool(member.all()) or not bool(member.any()):
            break
        c0, c1 = f[~member].mean(0), f[member].mean(0)
    return member


def feature_split(features: Tensor, score: Tensor, gate: float) -> tuple[Tensor, float | None]:
    """Split a generated batch along the teacher's own feature clusters, oriented by robustness.

    2-means on the penultimate features finds the batch's two groups (an NTL teacher maps its OOD
    region to a separate, sink-class cluster); the group whose samples are more fragile under
    attack is the ID-like one. ``gate``: the split is used only when the clusters really differ in
    robustness (AUROC of the fragility score, fragile cluster vs the other, >= gate); otherwise
    the whole batch is fragile (an SL teacher's clusters are just classes). Returns (fragile mask,
    the separation AUROC or None when 2-means found one cluster).
    """
    member = two_means(features)
    sep = auroc(score, member)
    b = member.numel()
    if sep is None:
        return torch.ones(b, dtype=torch.bool, device=score.device), None
    fragile_cluster = member if sep >= 0.5 else ~member
    separation = max(sep, 1.0 - sep)
    if separation < gate:
        return torch.ones(b, dtype=torch.bool, device=score.device), separation
    return fragile_cluster, separation


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------
@dataclass
class SplitResult:
    """ATEsc's verdict on one synthetic batch.

    ``fragile`` (bool, B): ID-like samples (KD); ``~fragile``: OOD-like (forgetting).
    ``score`` (B,): fragility, higher = more fragile. ``teacher_logits`` (B, C): the teacher on the
    clean batch (reuse them for KD on every student step). ``adv_logits``: the teacher on x_adv.
    ``features``: the teacher's clean penultimate features; ``separation``: the feature split's
    gate statistic (None for the score-only splits).
    """

    fragile: Tensor
    score: Tensor
    teacher_logits: Tensor
    adv_logits: Tensor | None = None
    features: Tensor | None = None
    separation: float | None = None

    @property
    def fragile_ratio(self) -> float:
        return float(self.fragile.float().mean()) if self.fragile.numel() else 0.0

    @property
    def robust_ratio(self) -> float:
        return 1.0 - self.fragile_ratio if self.fragile.numel() else 0.0


class ATEsc:
    """Splits synthetic batches by the teacher's adversarial robustness, builds the student's
    losses and guides the generator (the synthesizer's ``Guide``).

    The teacher's parameters are frozen (``requires_grad=False``) on construction. With
    ``generator_split``, robust (OOD-like) generated samples go to a bank that completes the
    batches whose statistics are matched against the teacher's BN running statistics, and the
    one-hot, balance and adversarial terms count fragile samples only.
    """

    def __init__(self, teacher: nn.Module, cfg: ATEscConfig) -> None:
        from core.dfkd.pool import SamplePool

        if cfg.score not in SCORES:
            raise ValueError(f"unknown robustness score {cfg.score!r}")
        self.teacher = teacher
        for p in teacher.parameters():  # frozen throughout DFKD; gradients only ever reach inputs
            p.requires_grad_(False)
        self.cfg = cfg
        self.splitter = Splitter(cfg) if cfg.split != "feature" else None
        device = next(teacher.parameters()).device
        self.bank = SamplePool(cfg.bank_size, device)
        self.last_split: tuple[Tensor, SplitResult] | None = None  # the generator batch judged by plan()
        self.trap_evidence = 0.0  # running share of generator batches that split (see plan())

    def active(self, iteration: int) -> bool:
        """False during the first ``warmup`` iterations (plain DFKD), True afterwards."""
        return self.cfg.enabled and iteration >= self.cfg.warmup

    def guides_generator(self, w_adv: float) -> bool:
        """Whether the synthesizer needs this guide: a generator split, steering, or a masked
        adversarial term (asked for, or forced while forgetting is on: the forgetting loss teaches
        the student to disagree on robust samples, and an unmasked adversarial term would then pay
        the generator to produce exactly those)."""
        c = self.cfg
        return c.generator_split or c.steer_generator or (w_adv > 0 and self.masks_adversarial)

    @property
    def masks_adversarial(self) -> bool:
        return self.cfg.adv_mask or self.cfg.forget_weight > 0

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher on clean ``x`` in eval mode (what a run without ATEsc distils from)."""
        with frozen_eval(self.teacher):
            return self.teacher(x.detach()).detach()

    def analyze(self, x: Tensor) -> SplitResult:
        """Attack the teacher once on ``x``, score each sample and split the batch."""
        c = self.cfg
        x_adv, clean, feats = attack(self.teacher, x, c.eps, c.steps, c.step_size)
        with torch.no_grad(), frozen_eval(self.teacher):
            adv = self.teacher(x_adv).detach()
        score = robustness_score(c.score, clean, adv)
        separation = None
        if self.splitter is None:
            if feats is None:
                raise ValueError("atesc.split='feature' needs a teacher with penultimate features")
            fragile, separation = feature_split(feats, score, c.gate)
        else:
            fragile = self.splitter.split(score)
        return SplitResult(fragile=fragile, score=score, teacher_logits=clean, adv_logits=adv, features=feats,
                           separation=separation)

    # -- the synthesizer's Guide ---------------------------------------------------------------
    def plan(self, x: Tensor) -> GuidePlan:
        """Judge the generator's (detached) batch once; bank its robust samples; weight the update."""
        c = self.cfg
        split = self.analyze(x)
        self.last_split = (x.detach(), split)
        fragile = split.fragile
        mask = fragile.to(x.dtype)
        if not bool(fragile.any()):  # an all-robust batch keeps every sample (nothing to weight by)
            mask = torch.ones_like(mask)
        if not c.generator_split:
            return GuidePlan(adv_weights=mask if self.masks_adversarial else None)
        robust = ~fragile
        # Evidence of a trap: how often recent batches split into a robust and a fragile group.
        # An SL teacher's batches rarely do, so its generator keeps (nearly) plain BN matching.
        split_now = float(bool(robust.any()) and bool(fragile.any()))
        self.trap_evidence = c.gate_momentum * self.trap_evidence + (1.0 - c.gate_momentum) * split_now
        if bool(robust.any()):
            self.bank.add(x[robust], split.teacher_logits[robust], fragile[robust])
        completion = None
        if len(self.bank):
            # Top the batch's OOD share up to the teacher's mixing ratio with banked robust samples,
            # scaled by the evidence that this teacher has an OOD region at all.
            b, r = x.shape[0], int(robust.sum())
            m = round(self.trap_evidence * max(0.0, (c.bn_mix * b - r) / (1.0 - c.bn_mix)))
            completion = self.bank.sample(m)[0] if m else None
        return GuidePlan(weights=mask, completion=completion)

    def extra_loss(self, x: Tensor, teacher_logits: Tensor) -> Tensor | None:
        """Generator steering (``steer_generator``), else nothing."""
        return self.steer_loss(x, teacher_logits) if self.cfg.steer_generator else None

    # -- the student's losses ------------------------------------------------------------------
    def student_loss(
        self, student_logits: Tensor, teacher_logits: Tensor, fragile: Tensor, T: float = 1.0
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(total, kd, forget): KD averaged over the fragile samples, plus ``forget_weight`` times the
        forgetting loss averaged over the robust ones. An empty group contributes exactly 0."""
        fragile = fragile.to(student_logits.device).bool()
        kd_per = kd_loss(student_logits, teacher_logits, T, reduction="none")
        kd = reduce_per_sample(kd_per, "batchmean", fragile)
        fg_per = forget_loss(self.cfg.forget, student_logits, teacher_logits, self.cfg.forget_cap, T)
        forget = reduce_per_sample(fg_per, "batchmean", ~fragile)
        total = kd + self.cfg.forget_weight * forget
        return total, kd, forget

    def steer_loss(self, x: Tensor, teacher_logits: Tensor | None = None) -> Tensor:
        """Generator steering: ``-steer_weight * mean KL(teacher(x) || teacher(x + delta))``, delta
        the one-step (FGSM) eps attack at ``x``. Minimising it rewards fragile (ID-like) samples.
        Differentiable w.r.t. ``x`` through both teacher evaluations (delta is held constant).

        ``teacher_logits``: the teacher's logits on ``x`` with their graph (the synthesizer passes
        the ones its loss already computed); then delta comes from that graph (one extra backward
        through the teacher, no extra clean forward). Without them the teacher runs on ``x`` here.
        """
        c = self.cfg
        with frozen_eval(self.teacher):
            if teacher_logits is not None and teacher_logits.requires_grad and x.requires_grad:
                clean = teacher_logits
                target = clean.detach().argmax(dim=1)
                ce = F.cross_entropy(clean.float(), target, reduction="sum")
                (grad,) = torch.autograd.grad(ce, x, retain_graph=True)
                xd = x.detach()
                delta = (xd + c.eps * grad.sign()).clamp(0.0, 1.0) - xd
                adv = self.teacher(x + delta)
            else:
                x_adv, _, _ = attack(self.teacher, x, c.eps, 1, c.eps)
                delta = (x_adv - x.detach()).detach()
                clean, adv = self.teacher(torch.cat([x, x + delta])).chunk(2)
        return -c.steer_weight * kl_per_sample(clean, adv).mean()

    def state(self) -> dict[str, Tensor]:
        out = {f"splitter.{k}": v for k, v in self.splitter.state().items()} if self.splitter else {}
        out.update({f"bank.{k}": v for k, v in self.bank.state().items()})
        out["trap_evidence"] = torch.tensor(self.trap_evidence, dtype=torch.float64)
        return out

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        if self.splitter is not None:
            self.splitter.load_state({k.removeprefix("splitter."): v for k, v in tensors.items()
                                      if k.startswith("splitter.")})
        self.bank.load_state({k.removeprefix("bank."): v for k, v in tensors.items() if k.startswith("bank.")})
        if "trap_evidence" in tensors:
            self.trap_evidence = float(tensors["trap_evidence"])
