"""Loss helpers shared by the DFKD synthesizers, the trainer and ATEsc.

Every per-sample loss is computed in float32 from ``log_softmax`` (never ``p * log p`` on raw
probabilities), so a class probability of exactly 0 cannot produce NaN.

- ``kd_loss``: KL(teacher || student) at temperature ``T``, times ``T^2`` (Hinton et al.).
- ``class_balance``: negative entropy of the batch-mean teacher softmax (DFQ's balance term).
- ``uniform_forget`` / ``neg_kl_forget``: the two forgetting losses ATEsc applies to robust
  (OOD-like) samples.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["batchmean", "sum", "none"]

# Floor for probabilities before a log: far below anything a float32 softmax reports as non-zero.
PROB_EPS = 1e-8


def reduce_per_sample(per_sample: Tensor, reduction: Reduction = "batchmean", weight: Tensor | None = None) -> Tensor:
    """Reduce a (B,) loss. ``weight`` (B,) float or bool masks/weights the samples.

    ``batchmean`` with a weight is ``sum(w * l) / sum(w)`` and is exactly 0 (never NaN) when every
    weight is 0, so an empty group contributes nothing.
    """
    if weight is not None:
        w = weight.to(per_sample.dtype)
        if w.shape != per_sample.shape:
            raise ValueError(f"weight shape {tuple(w.shape)} != per-sample loss shape {tuple(per_sample.shape)}")
        weighted = per_sample * w
        if reduction == "none":
            return weighted
        if reduction == "sum":
            return weighted.sum()
        return weighted.sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "batchmean":
        if per_sample.numel() == 0:
            return per_sample.sum()  # 0, with the graph intact
        return per_sample.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def kl_per_sample(p_logits: Tensor, q_logits: Tensor, T: float = 1.0) -> Tensor:
    """KL(softmax(p/T) || softmax(q/T)) per sample, shape (B,). No ``T^2`` factor."""
    log_p = F.log_softmax(p_logits.float() / T, dim=1)
    log_q = F.log_softmax(q_logits.float() / T, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    T: float = 1.0,
    reduction: Reduction = "batchmean",
    weight: Tensor | None = None,
) -> Tensor:
    """Distillation loss KL(teacher || student) at temperature ``T``, times ``T^2``.

    ``reduction="none"`` returns per-sample losses (B,); ``weight`` (B,) masks or weights samples.
    """
    per_sample = kl_per_sample(teacher_logits, student_logits, T) * (T * T)
    return reduce_per_sample(per_sample, reduction, weight)


def class_balance(logits: Tensor, eps: float = PROB_EPS) -> Tensor:
    """Negative entropy of the batch-mean softmax, ``sum_c p_c log p_c`` (minimum ``-log C``).

    Minimising it spreads the teacher's predictions over all classes. Probabilities are clamped
    before the log: a class whose mean probability underflows to 0 would otherwise give NaN.
    """
    p = F.softmax(logits.float(), dim=1).mean(dim=0)
    return (p * p.clamp_min(eps).log()).sum()


def entropy(logits: Tensor, T: float = 1.0) -> Tensor:
    """Per-sample entropy of softmax(logits / T), shape (B,)."""
    log_p = F.log_softmax(logits.float() / T, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def uniform_forget(student_logits: Tensor, T: float = 1.0, reduction: Reduction = "none", weight: Tensor | None = None) -> Tensor:
    """KL(uniform || softmax(student / T)) per sample: pushes the student towards the uniform answer.

    Equals ``-log C - mean_c log p_c`` (>= 0, 0 exactly at the uniform prediction).
    """
    log_q = F.log_softmax(student_logits.float() / T, dim=1)
    n_classes = student_logits.shape[1]
    per_sample = -math.log(n_classes) - log_q.mean(dim=1)
    return reduce_per_sample(per_sample, reduction, weight)


def neg_kl_forget(
    student_logits: Tensor,
    teacher_logits: Tensor,
    cap: float,
    T: float = 1.0,
    reduction: Reduction = "none",
    weight: Tensor | None = None,
) -> Tensor:
    """``-min(KD(teacher || student), cap)`` per sample: pushes the student away from the teacher.

    The KD term is ``kd_loss`` (with ``T^2``). Once a sample's KL reaches ``cap`` its gradient is 0,
    so the loss is bounded below by ``-cap`` and cannot blow up.
    """
    kl = kd_loss(student_logits, teacher_logits, T, reduction="none")
    per_sample = -torch.clamp(kl, max=cap)
    return reduce_per_sample(per_sample, reduction, weight)


FORGET_KINDS = ("uniform", "neg-kl")


def forget_loss(kind: str, student_logits: Tensor, teacher_logits: Tensor, cap: float, T: float = 1.0) -> Tensor:
    """Per-sample forgetting loss (B,) of the given kind: ``uniform`` or ``neg-kl``."""
    if kind == "uniform":
        return uniform_forget(student_logits, T)
    if kind == "neg-kl":
        return neg_kl_forget(student_logits, teacher_logits, cap, T)
    raise ValueError(f"unknown forgetting loss {kind!r} (known: {', '.join(FORGET_KINDS)})")
