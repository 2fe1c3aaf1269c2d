"""Trap diagnostics.

- ``score_auroc``: on REAL held-out images, how well the ATEsc fragility score (the config's attack
  and score) tells the teacher's ID test images from its OOD test images: AUROC with ID as the
  positive class and the fragility score as the ranking (1.0 = every ID image is more fragile than
  every OOD image, 0.5 = no separation, < 0.5 = OOD is the fragile side). Also the top-1 flip rate
  under the attack on each side.
- ``ood_share_curve``: from a run's per-step split, the share of each generated batch ATEsc judged
  robust (OOD-like), smoothed over steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel

from core.threads import apply_threads


class ScoreAUROC(BaseModel):
    teacher_kind: str
    id_domain: str
    ood_domain: str
    score: str
    eps: float
    steps: int
    samples: int
    auroc: float
    flip_rate_id: float
    flip_rate_ood: float
    score_id_mean: float
    score_ood_mean: float
    teacher_acc_id: float
    teacher_acc_ood: float


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) (Mann-Whitney U / (n_pos n_neg)); ties count a half."""
    pos = pos.detach().double().flatten()
    neg = neg.detach().double().flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("AUROC needs at least one sample on each side")
    allv = torch.cat([pos, neg])
    order = torch.argsort(allv, stable=True)
    sorted_v = allv[order]
    ranks = torch.empty_like(allv)
    # average ranks over ties
    i = 0
    n = allv.numel()
    vals = sorted_v.tolist()
    while i < n:
        j = i
        while j + 1 < n and vals[j + 1] == vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    r_pos = ranks[: pos.numel()].sum().item()
    n_pos, n_neg = pos.numel(), neg.numel()
    return (r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


@torch.no_grad()
def _scores(teacher: torch.nn.Module, x: torch.Tensor, cfg: Any, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    from core.atesc import attack, robustness_score

    scores, flips = [], []
    for i in range(0, x.shape[0], batch):
        xb = x[i : i + batch]
        x_adv, clean, _ = attack(teacher, xb, cfg.eps, cfg.steps, cfg.step_size)
        adv = teacher(x_adv)
        scores.append(robustness_score(cfg.score, clean, adv))
        flips.append(robustness_score("flip", clean, adv))
    return torch.cat(scores), torch.cat(flips)


def score_auroc(cfg: Any, samples: int = 500, teacher: Any = None) -> ScoreAUROC:
    """AUROC of the fragility score on real ID vs real OOD test images for ``cfg``'s teacher."""
    from core.data import load_domain
    from core.teachers.train import get_teacher
    from core.eval import resolve_device

    apply_threads(cfg.run.threads)
    root = cfg.data.root.expanduser()
    id_data = load_domain(cfg.data.id_domain, root, seed=cfg.run.seed)
    ood_data = load_domain(cfg.data.ood_domain, root, seed=cfg.run.seed)
    result = teacher if teacher is not None else get_teacher(cfg)
    device = resolve_device(cfg.run.device)
    model = result.model.to(device).eval()
    xi = id_data.test_x[:samples].to(device)
    xo = ood_data.test_x[:samples].to(device)
    si, fi = _scores(model, xi, cfg.atesc)
    so, fo = _scores(model, xo, cfg.atesc)
    return ScoreAUROC(
        teacher_kind=cfg.teacher.kind, id_domain=cfg.data.id_domain, ood_domain=cfg.data.ood_domain,
        score=cfg.atesc.score, eps=cfg.atesc.eps, steps=cfg.atesc.steps, samples=int(xi.shape[0]),
        auroc=auroc(si, so), flip_rate_id=float(fi.mean()), flip_rate_ood=float(fo.mean()),
        score_id_mean=float(si.mean()), score_ood_mean=float(so.mean()),
        teacher_acc_id=float(result.acc_id), teacher_acc_ood=float(result.acc_ood),
    )


def ood_share_curve(steps: Sequence[int], ood_ratios: Sequence[float], window: int = 10) -> tuple[list[int], list[float]]:
    """(steps, share judged robust / OOD-like) from a run's per-step split, as a trailing moving average.

    Runs without ATEsc report a fragile share of 1.0, so their curve is 0 throughout.
    """
    raw = [float(v) for v in ood_ratios]
    out: list[float] = []
    acc = 0.0
    for i, v in enumerate(raw):
        acc += v
        if i >= window:
            acc -= raw[i - window]
        out.append(acc / min(i + 1, window))
    return [int(s) for s in steps], out
