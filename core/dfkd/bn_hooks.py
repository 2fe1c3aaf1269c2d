"""Forward hooks on a teacher's BatchNorm2d layers (DeepInversion / DFQ statistics matching).

The hooks are registered once and stay dormant (one flag check per layer) until a forward runs
inside ``capture()``. Other teacher forwards (evaluation, the ATEsc attack, the student's KD
targets) therefore cost nothing extra and never leak graph references.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class BNStatsHooks:
    """Collects, for each BatchNorm2d input, the batch statistics and per-sample channel means."""

    def __init__(self, model: nn.Module, keep_instance_means: bool = False) -> None:
        self.layers: list[nn.BatchNorm2d] = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        self.keep_instance_means = keep_instance_means
        self._active = False
        self._losses: list[Tensor] = []
        self._instance_means: list[Tensor] = []
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]

    @property
    def feature_dim(self) -> int:
        """Size of ``instance_features()``: the summed channel counts of all BN layers."""
        return sum(layer.num_features for layer in self.layers)

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if not self._active:
            return
        assert isinstance(module, nn.BatchNorm2d)
        x = inputs[0].float()
        per_sample = x.mean(dim=(2, 3))  # (B, C)
        mean = per_sample.mean(dim=0)
        var = x.transpose(0, 1).flatten(1).var(dim=1, unbiased=False)
        # running_* are buffers; .float() keeps a copy out of the autograd graph's way under AMP.
        r = torch.linalg.vector_norm(mean - module.running_mean.float(), 2) + torch.linalg.vector_norm(
            var - module.running_var.float(), 2
        )
        self._losses.append(r)
        if self.keep_instance_means:
            self._instance_means.append(per_sample)

    @contextmanager
    def capture(self) -> Iterator[BNStatsHooks]:
        """Record statistics for forwards inside the block. Starts from an empty record."""
        self.clear()
        self._active = True
        try:
            yield self
        finally:
            self._active = False

    def bn_loss(self) -> Tensor:
        """Sum over layers (and captured forwards) of ||mu - running_mean|| + ||var - running_var||."""
        if not self._losses:
            raise RuntimeError("no BatchNorm2d statistics captured (does the teacher have BatchNorm2d layers?)")
        return torch.stack(self._losses).sum()

    def instance_features(self) -> Tensor:
        """(B, feature_dim): per-sample channel means of every BN input of the last captured forward."""
        if not self._instance_means:
            raise RuntimeError("no instance features captured (keep_instance_means=False or nothing ran)")
        n = len(self.layers)
        return torch.cat(self._instance_means[-n:], dim=1)

    def clear(self) -> None:
        self._losses = []
        self._instance_means = []

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()
