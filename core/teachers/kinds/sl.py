"""``sl``: a supervised teacher, cross-entropy on the ID domain only (the control)."""

from __future__ import annotations

import torch

from core.teachers.base import TEACHER_KINDS, TeacherKind, kl_onehot


@TEACHER_KINDS.register("sl")
class Supervised(TeacherKind):
    def loss(self, xb: torch.Tensor, yb: torch.Tensor, step: int, *, detail: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return kl_onehot(self.model(xb), yb), {}
