"""The synthesizer interface (Fast-Datafree's shape): train a generator against a frozen teacher,
draw synthetic batches for the student.

One synthesizer per run. The trainer calls ``generator_step(student)`` once per outer iteration
and trains the student on the returned ``x`` for ``cfg.dfkd.student_steps`` steps.

Randomness (latents, augmentations) comes from torch's global RNG on ``device``, so the
checkpoint's saved RNG states make a resumed run bit-exact on CPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from core.errors import NonFiniteLoss
from core.losses import class_balance, kd_loss, reduce_per_sample
from core.registry import Registry

from .bn_hooks import BNStatsHooks


if TYPE_CHECKING:  # annotations only: importable without pydantic
    from core.config import Config


@dataclass
class GeneratorStep:
    """Result of one generator update.

    ``loss`` is the total generator loss (float), ``parts`` its unweighted terms (bn, oh, balance,
    adv, and cr / extra when present), ``x`` a fresh detached batch (B, 3, H, W) in [0, 1] drawn
    after the update: the batch the student trains on.
    """

    loss: float
    parts: dict[str, float] = field(default_factory=dict)
    x: Tensor = field(default_factory=lambda: torch.empty(0))


@dataclass
class GuidePlan:
    """What a guide (ATEsc) asks of one generator update, decided on the detached batch.

    ``weights`` (B,): per-sample weights of the one-hot, balance and adversarial terms (0 drops a
    sample: a robust, OOD-like one). ``adv_weights`` (B,): weights of the adversarial term alone
    (default ``weights``). ``completion`` (M, C, H, W), detached: samples appended to the batch
    whose statistics are matched against the teacher's BN running statistics, so that a teacher
    whose statistics mix ID and OOD data does not pay the generator to produce the OOD part.
    """

    weights: Tensor | None = None
    adv_weights: Tensor | None = None
    completion: Tensor | None = None


class Guide(Protocol):
    """Steers a synthesizer: ATEsc today. The synthesizer asks it for a plan on each detached
    batch and for an extra generator loss given the teacher logits it already computed."""

    def plan(self, x: Tensor) -> GuidePlan: ...

    def extra_loss(self, x: Tensor, teacher_logits: Tensor) -> Tensor | None: ...


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class Synthesizer(ABC):
    """Trains a generator against a frozen teacher; draws synthetic batches. One per run.

    The teacher is put in eval mode and its parameters are frozen (``requires_grad=False``).
    Gradients of the generator loss reach only the synthesizer's own parameters
    (``backward(inputs=...)``): the student's and teacher's ``.grad`` are never touched.
    """

    def __init__(self, teacher: nn.Module, generator: nn.Module, cfg: Config, device: torch.device) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.teacher = teacher
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.generator = generator
        self.nz = cfg.generator.nz
        self.batch_size = cfg.dfkd.batch_size
        self.hooks = BNStatsHooks(teacher, keep_instance_means=self._wants_instance_features())
        if not self.hooks.layers:
            from core.errors import BadInput

            raise BadInput(
                f"teacher has no BatchNorm2d layers; {type(self).__name__} needs them for statistics matching",
                field="teacher.arch",
            )
        self.opt_g: torch.optim.Optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=cfg.generator.lr, betas=(0.5, 0.999)
        )
        # fp16 autocast on CUDA: the trainer sets a gradient scaler (bf16 and fp32 need none).
        self.scaler: torch.amp.GradScaler | None = None

    # -- hooks for subclasses -------------------------------------------------------------------
    def _wants_instance_features(self) -> bool:
        return False

    @abstractmethod
    def generator_step(self, student: nn.Module, guide: Guide | None = None) -> GeneratorStep:
        """One generator update on a fresh latent batch of ``cfg.dfkd.batch_size``.

        ``guide`` (ATEsc) plans the update on the detached batch (``GuidePlan``) and may add an
        extra loss computed from the batch and the teacher's logits on it (with graph). Raises
        ``NonFiniteLoss`` (before any optimizer step) when the loss is NaN/Inf.
        """

    # -- shared pieces --------------------------------------------------------------------------
    def sample_z(self, n: int | None = None) -> Tensor:
        return torch.randn(n or self.batch_size, self.nz, device=self.device)

    @torch.no_grad()
    def sample(self, n: int | None = None) -> Tensor:
        """A detached float32 batch in [0, 1] (generator in train mode: batch statistics, as optimised)."""
        self.generator.train()
        return self.generator(self.sample_z(n)).detach().float()

    def _dfq_terms(
        self, x: Tensor, student: nn.Module, plan: GuidePlan | None = None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """DFQ's generator terms on ``x``. Returns (weighted sum, unweighted parts, teacher logits on ``x``)."""
        d = self.cfg.dfkd
        plan = plan or GuidePlan()
        b = x.shape[0]
        batch = x if plan.completion is None else torch.cat([x, plan.completion.to(x.dtype)])
        with self.hooks.capture():
            t_out = self.teacher(batch)[:b]
            loss_bn = self.hooks.bn_loss()
        w = plan.weights
        loss_oh = reduce_per_sample(
            nn.functional.cross_entropy(t_out.float(), t_out.argmax(dim=1), reduction="none"), "batchmean", w
        )
        loss_balance = class_balance(t_out if w is None else t_out[w > 0]) if w is None or bool((w > 0).any()) \
            else t_out.new_zeros(())
        parts = {"bn": loss_bn, "oh": loss_oh, "balance": loss_balance}
        total = d.w_bn * loss_bn + d.w_oh * loss_oh + d.w_balance * loss_balance
        if d.w_adv > 0:
            # A DDP-wrapped student is called through .module: its gradient hooks must not fire here.
            plain = student.module if isinstance(student, nn.parallel.DistributedDataParallel) else student
            with frozen_eval(plain):
                s_out = plain(x)
            adv_w = plan.adv_weights if plan.adv_weights is not None else w
            loss_adv = -kd_loss(s_out, t_out, T=d.temperature, weight=adv_w)
            parts["adv"] = loss_adv
            total = total + d.w_adv * loss_adv
        return total, parts, t_out

    def _finish(
        self,
        total: Tensor,
        parts: dict[str, Tensor],
        x: Tensor,
        guide: Guide | None,
        teacher_logits: Tensor,
        params: list[Tensor],
        optimizers: list[torch.optim.Optimizer],
    ) -> GeneratorStep:
        """Add the guide's extra term, step the optimizers, draw the student's batch."""
        extra = guide.extra_loss(x, teacher_logits) if guide is not None else None
        if extra is not None:
            parts["extra"] = extra
            total = total + extra
        if not bool(torch.isfinite(total)):
            bad = {k: float(v.detach()) for k, v in parts.items()}
            raise NonFiniteLoss(f"generator loss is not finite: {float(total.detach())} (terms: {bad})")
        self._update(total, params, optimizers)
        x_next = self.sample()
        return GeneratorStep(
            loss=float(total.detach()), parts={k: float(v.detach()) for k, v in parts.items()}, x=x_next
        )

    def _update(self, total: Tensor, params: list[Tensor], optimizers: list[torch.optim.Optimizer]) -> None:
        """Backward ``total`` into ``params`` only and step ``optimizers`` (through the fp16 scaler if set)."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward(inputs=params)
            for opt in optimizers:
                self.scaler.step(opt)
            self.scaler.update()
        else:
            total.backward(inputs=params)
            for opt in optimizers:
                opt.step()

    # -- checkpoint surface ---------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g}

    def extra_state(self) -> dict[str, Tensor]:
        return {}

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        if tensors:
            raise ValueError(f"{type(self).__name__} has no extra state, got {sorted(tensors)}")

    def close(self) -> None:
        """Remove the teacher hooks (the teacher can be reused afterwards)."""
        self.hooks.remove()


SYNTHESIZERS: Registry[type[Synthesizer]] = Registry("dfkd method", plugins="core.dfkd.methods")


def create_synthesizer(method: str, teacher: nn.Module, generator: nn.Module, cfg: Config, device: torch.device) -> Synthesizer:
    """Look up ``method`` (``dfq`` | ``cmi``) and build its synthesizer."""
    cls = SYNTHESIZERS.get(method, field="dfkd.method")
    return cls(teacher, generator, cfg, device)
