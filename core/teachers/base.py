"""What a teacher kind is: the training loss of one batch, looked up by ``teacher.kind``.

The registry ``TEACHER_KINDS`` owns the plugin package ``core.teachers.kinds``: one module per
kind, named like it (``ntl_target.py`` is ``ntl-target``), so ``core.config`` knows the names
without importing torch. The loop that trains any kind (data, optimizer, seeding, progress, cache)
is ``core.teachers.train``; a kind only says how a batch of ID images becomes a loss.

Randomness: every random draw of a kind comes from the ``generator`` it is given, in a fixed order
per step, so a teacher is a deterministic function of its config (the cache key relies on it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from core.registry import Registry

if TYPE_CHECKING:
    from core.config import TeacherConfig
    from core.data import DomainData
    from core.models import Classifier


class TeacherKind(ABC):
    """One kind's training loss. Built once per training run, after the model.

    ``uses_ood_images``: trains on the OOD domain's training images (the run then refuses an OOD
    domain without any); they are drawn by :meth:`next_ood_batch`.
    """

    uses_ood_images: ClassVar[bool] = False

    def __init__(
        self, tc: TeacherConfig, model: Classifier, ood: DomainData, generator: torch.Generator, device: torch.device
    ) -> None:
        self.tc = tc
        self.model = model
        self.generator = generator
        self.device = device
        self._ood = ood
        self._ood_perm = torch.empty(0, dtype=torch.long)
        self._ood_pos = 0

    @abstractmethod
    def loss(self, xb: torch.Tensor, yb: torch.Tensor, step: int, *, detail: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one batch of (shifted) ID images ``xb`` with labels ``yb``; ``step`` counts from 0.

        The dict holds the parts a progress display shows (``kl_id``, ``kl_ood``, ``mmd``: the
        fields of :class:`core.teachers.train.TeacherProgress`), only when ``detail`` is true.
        """

    def next_ood_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` OOD training images (randomly shifted) and labels: a shuffled pass over the domain,
        reshuffled when it runs out (a batch may span two passes)."""
        x_ood, y_ood = self._ood.train_x, self._ood.train_y
        g = self.generator
        if self._ood_pos + n > len(self._ood_perm):
            self._ood_perm = torch.cat([self._ood_perm[self._ood_pos :], torch.randperm(len(x_ood), generator=g)])
            while len(self._ood_perm) < n:
                self._ood_perm = torch.cat([self._ood_perm, torch.randperm(len(x_ood), generator=g)])
            self._ood_pos = 0
        idx = self._ood_perm[self._ood_pos : self._ood_pos + n]
        self._ood_pos += n
        return random_shift(x_ood[idx], self.tc.shift, g).to(self.device), y_ood[idx].to(self.device)


TEACHER_KINDS: Registry[type[TeacherKind]] = Registry("teacher kind", plugins="core.teachers.kinds")


def kl_onehot(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(onehot(y) || softmax(logits)) (= cross-entropy)."""
    return F.cross_entropy(logits, y)


def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``pixels`` in x and y (zero fill), like pad + random crop."""
    if pixels <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    dy = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (n, w)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[idx_n, idx_c, rows[:, None, :, None], cols[:, None, None, :]]
