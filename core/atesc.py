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

from core.losses import forget_loss, kd_loss, kl_per_sample, reduce_per_sample

if TYPE_CHECKING:  # annotations only: importable without pydantic
    from core.config import ATEscConfig

__all__ = [
    "ATEsc",
    "SplitResult",
    "Splitter",
    "forget_loss",
    "pgd_attack",
    "robustness_score",
    "two_means_threshold",
]

SCORES = ("flip", "shift", "margin")
SPLITS = ("quantile", "threshold", "adaptive")


# ---------------------------------------------------------------------------------------------
# Attack
# ---------------------------------------------------------------------------------------------
def default_step_size(eps: float, steps: int) -> float:
    return 2.5 * eps / steps


def _attack(
    teacher: nn.Module, x: Tensor, eps: float, steps: int, step_size: float | None = None
) -> tuple[Tensor, Tensor]:
    """PGD in the L-inf ball around ``x`` (clamped to [0, 1]); returns (x_adv, clean teacher logits).

    No random start, so ``steps=1`` is FGSM. At the clean point the gradient of
    KL(teacher(x) || teacher(x')) vanishes (x' = x is its minimum), so the first step ascends the
    cross-entropy to the teacher's clean top-1 (the FGSM objective); later steps ascend the KL.
    The first step's forward doubles as the clean forward. Only ``x_adv`` receives gradients; the
    teacher's parameters and ``.grad`` are untouched. The teacher runs in eval mode.
    """
    x = x.detach()
    was_training = teacher.training
    teacher.eval()
    try:
        if eps <= 0 or steps <= 0:
            with torch.no_grad():
                clean = teacher(x).detach()
            return x.clone(), clean
        alpha = step_size if step_size is not None else default_step_size(eps, steps)
        lo = (x - eps).clamp_(0.0, 1.0)
        hi = (x + eps).clamp_(0.0, 1.0)
        x_adv = x.clone()
        clean: Tensor | None = None
        target: Tensor | None = None
        with torch.enable_grad():
            for i in range(steps):
                x_adv.requires_grad_(True)
                out = teacher(x_adv)
                if i == 0:
                    clean = out.detach()
                    target = clean.argmax(dim=1)
                    loss = F.cross_entropy(out.float(), target, reduction="sum")
                else:
                    assert clean is not None
                    loss = kl_per_sample(clean, out).sum()
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = torch.minimum(torch.maximum(x_adv.detach() + alpha * grad.sign(), lo), hi)
        assert clean is not None
        return x_adv.detach(), clean
    finally:
        teacher.train(was_training)


def pgd_attack(teacher: nn.Module, x: Tensor, eps: float, steps: int, step_size: float | None = None) -> Tensor:
    """Untargeted L-inf PGD on the teacher's output: ``x_adv`` with ||x_adv - x||_inf <= eps, in [0, 1].

    Maximises KL(teacher(x) || teacher(x_adv)) (first step: CE to the clean top-1, see ``_attack``).
    ``step_size`` defaults to ``2.5 * eps / steps``.
    """
    return _attack(teacher, x, eps, steps, step_size)[0]


# ---------------------------------------------------------------------------------------------
# Scores and split rules
# ---------------------------------------------------------------------------------------------
def robustness_score(kind: str, clean_logits: Tensor, adv_logits: Tensor) -> Tensor:
    """Per-sample fragility (B,): higher = MORE FRAGILE (ID-like for an NTL teacher).

    - ``flip``: 1.0 where the top-1 class changed under attack, else 0.0;
    - ``shift``: KL(softmax(clean) || softmax(adv));
    - ``margin``: drop of the clean top-1's logit margin, (z_y - max_{j!=y} z_j) on clean minus the
      same quantity on adv, with y the clean top-1 (> clean margin when the top-1 flipped).
    """
    clean_logits = clean_logits.detach().float()
    adv_logits = adv_logits.detach().float()
    if kind == "flip":
        return (clean_logits.argmax(dim=1) != adv_logits.argmax(dim=1)).float()
    if kind == "shift":
        return kl_per_sample(clean_logits, adv_logits).clamp_min(0.0)
    if kind == "margin":
        y = clean_logits.argmax(dim=1, keepdim=True)

        def margin(z: Tensor) -> Tensor:
            top = z.gather(1, y).squeeze(1)
            others = z.scatter(1, y, float("-inf"))
            return top - others.max(dim=1).values

        return margin(clean_logits) - margin(adv_logits)
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


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------
@dataclass
class SplitResult:
    """ATEsc's verdict on one synthetic batch.

    ``fragile`` (bool, B): ID-like samples (KD); ``~fragile``: OOD-like (forgetting).
    ``score`` (B,): fragility, higher = more fragile. ``teacher_logits`` (B, C): the teacher on the
    clean batch (reuse them for KD on every student step). ``adv_logits``: the teacher on x_adv.
    """

    fragile: Tensor
    score: Tensor
    teacher_logits: Tensor
    adv_logits: Tensor | None = None

    @property
    def fragile_ratio(self) -> float:
        return float(self.fragile.float().mean()) if self.fragile.numel() else 0.0

    @property
    def robust_ratio(self) -> float:
        return 1.0 - self.fragile_ratio if self.fragile.numel() else 0.0


class ATEsc:
    """Splits synthetic batches by the teacher's adversarial robustness and builds the losses.

    The teacher's parameters are frozen (``requires_grad=False``) on construction.
    """

    def __init__(self, teacher: nn.Module, cfg: ATEscConfig) -> None:
        if cfg.score not in SCORES:
            raise ValueError(f"unknown robustness score {cfg.score!r}")
        self.teacher = teacher
        for p in teacher.parameters():  # frozen throughout DFKD; gradients only ever reach inputs
            p.requires_grad_(False)
        self.cfg = cfg
        self.splitter = Splitter(cfg)

    def active(self, iteration: int) -> bool:
        """False during the first ``warmup`` iterations (plain DFKD), True afterwards."""
        return self.cfg.enabled and iteration >= self.cfg.warmup

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher on clean ``x`` in eval mode (what a run without ATEsc distils from)."""
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            return self.teacher(x.detach()).detach()
        finally:
            self.teacher.train(was_training)

    def analyze(self, x: Tensor) -> SplitResult:
        """Attack the teacher once on ``x``, score each sample and split the batch."""
        c = self.cfg
        x_adv, clean = _attack(self.teacher, x, c.eps, c.steps, c.step_size)
        with torch.no_grad():
            was_training = self.teacher.training
            self.teacher.eval()
            try:
                adv = self.teacher(x_adv).detach()
            finally:
                self.teacher.train(was_training)
        score = robustness_score(c.score, clean, adv)
        fragile = self.splitter.split(score)
        return SplitResult(fragile=fragile, score=score, teacher_logits=clean, adv_logits=adv)

    def adv_weights(self, x: Tensor) -> Tensor:
        """Float mask (B,) of the samples of ``x`` judged fragile (1.0) or robust (0.0), for
        ``adv_mask``: one attack on the detached batch. The adaptive split point is read, not updated
        (before it exists every sample counts); an all-robust batch counts every sample."""
        c = self.cfg
        x = x.detach()
        x_adv, clean = _attack(self.teacher, x, c.eps, c.steps, c.step_size)
        with torch.no_grad():
            was_training = self.teacher.training
            self.teacher.eval()
            try:
                adv = self.teacher(x_adv)
            finally:
                self.teacher.train(was_training)
        score = robustness_score(c.score, clean, adv)
        sp = self.splitter
        if sp.kind == "adaptive":
            fragile = _symlog1p(score.double()) >= sp.split_point if sp.initialized else torch.ones_like(score, dtype=torch.bool)
        else:
            fragile = sp.split(score)
        if not bool(fragile.any()):
            fragile = torch.ones_like(fragile)
        return fragile.to(x.dtype if x.is_floating_point() else torch.float32)

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
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            if teacher_logits is not None and teacher_logits.requires_grad and x.requires_grad:
                clean = teacher_logits
                target = clean.detach().argmax(dim=1)
                ce = F.cross_entropy(clean.float(), target, reduction="sum")
                (grad,) = torch.autograd.grad(ce, x, retain_graph=True)
                xd = x.detach()
                delta = (xd + c.eps * grad.sign()).clamp(0.0, 1.0) - xd
                adv = self.teacher(x + delta)
            else:
                x_adv, _ = _attack(self.teacher, x, c.eps, 1, c.eps)
                delta = (x_adv - x.detach()).detach()
                clean, adv = self.teacher(torch.cat([x, x + delta])).chunk(2)
        finally:
            self.teacher.train(was_training)
        return -c.steer_weight * kl_per_sample(clean, adv).mean()

    def extra_loss(self) -> Callable[[Tensor], Tensor] | None:
        """What to pass as ``Synthesizer.generator_step(extra_loss=...)``: ``steer_loss`` when
        ``steer_generator`` is on, else None."""
        return self.steer_loss if self.cfg.steer_generator else None

    def state(self) -> dict[str, Tensor]:
        return {f"splitter.{k}": v for k, v in self.splitter.state().items()}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        self.splitter.load_state({k.removeprefix("splitter."): v for k, v in tensors.items() if k.startswith("splitter.")})
