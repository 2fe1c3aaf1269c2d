"""CMI: Contrastive Model Inversion (Fang et al., IJCAI 2021), after Fast-Datafree's CMISynthesizer.

One ``generator_step`` synthesises one batch (knobs ``cfg.dfkd.cmi_*``):

1. The generator is re-initialised (``reset_generator``) and a fresh latent batch z is drawn. z is
   optimised with the generator: one Adam, two parameter groups, moments reset for every batch.
2. Every sample gets a target class (``targets``); the one-hot term pulls the teacher toward it.
3. ``g_steps`` inversion steps on two views of the generated batch: a global view (random crop
   with ``global_pad`` zero padding, horizontal flip) and a local view (random resized crop of
   ``local_scale_min``-1 of the area, aspect 3/4-4/3, flip). BN statistics (``dfkd.w_bn``), one-hot
   (``dfkd.w_oh``) and the decision-adversarial term (``w_adv``: -KL(teacher || student), only
   where both predict the same class) are taken on the global view.
4. Contrastive term (``w_cr``, ``cr_temperature``). Instance features are the per-sample channel
   means of every teacher BN input. A projection head maps local features to anchors and global
   features to keys (detached); each anchor's positive is its own global view and every other key
   is a negative. ``n_neg`` memory-bank rows (local and global features of past samples) join as
   extra anchors and keys; the batch's rows and the bank's rows are averaged separately.
5. The batch with the lowest loss over the steps is returned for the student, and its features
   enter the bank, a FIFO of ``bank_size`` rows.

Every random draw (re-initialisation, z, targets, views, bank rows) comes from torch's global RNG
on the device, so a checkpoint (which holds the RNG states) continues bit-exact. Checkpointed
state: the head and its Adam, the bank (``extra_state``), and the generator and its Adam (these
matter only with ``reset_generator = false``; z is redrawn for every batch).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.dfkd.base import SYNTHESIZERS, GeneratorStep, Guide, GuidePlan, Synthesizer, frozen_eval
from core.errors import BadInput, NonFiniteLoss
from core.losses import kl_per_sample, reduce_per_sample

if TYPE_CHECKING:  # annotations only: importable without pydantic
    from core.config import Config

LOCAL_RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of the local crops (the reference's default)


# -- pieces ---------------------------------------------------------------------------------------


def reset_parameters(model: nn.Module) -> None:
    """The reference's re-initialisation: weights N(0, 0.02), BN scales N(1, 0.02), biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _same_on_every_rank(module: nn.Module) -> None:
    """Data parallel: every rank takes rank 0's parameters (each rank's RNG stream differs, and DDP
    syncs gradients, not weights). One process: nothing to do."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        with torch.no_grad():
            for p in module.parameters():
                torch.distributed.broadcast(p, 0)


def sample_targets(n: int, num_classes: int, mode: Literal["random", "balanced"], device: torch.device) -> Tensor:
    """(n,) sorted class indices: uniform draws, or equal counts with the leftover classes drawn at random."""
    if mode == "random":
        targets = torch.randint(0, num_classes, (n,), device=device)
    else:
        classes = torch.arange(num_classes, device=device)
        leftover = torch.randperm(num_classes, device=device)[: n % num_classes]
        targets = torch.cat([classes.repeat(n // num_classes), leftover])
    return targets.sort().values  # sorted: sample grids read class by class


def _resample(
    x: Tensor, scale_x: Tensor, scale_y: Tensor, shift_x: Tensor, shift_y: Tensor, padding: Literal["zeros", "border"]
) -> Tensor:
    """Per-sample axis-aligned affine resampling (bilinear), differentiable in ``x``.

    Output coordinate u in [-1, 1] reads the input at ``scale * u + shift`` (normalised units), so a
    crop of width w (a share of the image) starting at share a is ``scale = w, shift = 2a + w - 1``;
    a negative scale mirrors the crop. Outside the image reads 0 (``zeros``) or the edge pixel
    (``border``).
    """
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, shift_x
    theta[:, 1, 1], theta[:, 1, 2] = scale_y, shift_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _flip_sign(n: int, device: torch.device) -> Tensor:
    return torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)


def global_view(x: Tensor, pad: int) -> Tensor:
    """Random crop of the zero-padded batch (integer shifts of up to ``pad`` pixels) + horizontal flip."""
    b, _, h, w = x.shape
    offsets = torch.randint(-pad, pad + 1, (b, 2), device=x.device).to(x.dtype)
    flip = _flip_sign(b, x.device).to(x.dtype)
    one = torch.ones(b, device=x.device, dtype=x.dtype)
    return _resample(x, flip, one, 2 * offsets[:, 0] / w, 2 * offsets[:, 1] / h, "zeros")


def crop_boxes(n: int, scale_min: float, device: torch.device) -> Tensor:
    """(n, 4) random crops as shares of the image: left, top, width, height.

    Area uniform in [scale_min, 1], log aspect ratio uniform in log(3/4)..log(4/3); a side longer
    than the image is cut to it (the area then stays within [scale_min, 1]).
    """
    u = torch.rand(n, 4, device=device)
    area = scale_min + (1 - scale_min) * u[:, 0]
    lo, hi = math.log(LOCAL_RATIO[0]), math.log(LOCAL_RATIO[1])
    ratio = torch.exp(lo + (hi - lo) * u[:, 1])
    width = torch.sqrt(area * ratio).clamp(max=1.0)
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    return torch.stack([(1 - width) * u[:, 2], (1 - height) * u[:, 3], width, height], dim=1)


def local_view(x: Tensor, scale_min: float) -> Tensor:
    """Random resized crop (``crop_boxes``) back to the full size, bilinear, + horizontal flip.

    Edge pixels of a crop blend a quarter pixel across the crop's border, clamped at the image's.
    """
    boxes = crop_boxes(x.shape[0], scale_min, x.device).to(x.dtype)
    flip = _flip_sign(x.shape[0], x.device).to(x.dtype)
    left, top, width, height = boxes.unbind(1)
    return _resample(x, flip * width, height, 2 * left + width - 1, 2 * top + height - 1, "border")


def decision_adversarial(s_logits: Tensor, t_logits: Tensor, agree_only: bool, weight: Tensor | None = None) -> Tensor:
    """-KL(teacher || student) per sample (T = 1), averaged over the whole batch.

    ``agree_only``: samples where student and teacher predict different classes count 0, so the
    generator looks for samples the student gets right but not confidently enough.
    ``weight`` (B,) further weights samples (a guide's plan, e.g. ATEsc's adv mask).
    """
    per_sample = kl_per_sample(t_logits, s_logits)
    w = torch.ones_like(per_sample)
    if agree_only:
        w = (s_logits.argmax(dim=1) == t_logits.argmax(dim=1)).to(per_sample.dtype)
    if weight is not None:
        w = w * weight.to(per_sample.dtype)
    return -(per_sample * w).mean()


def contrastive_loss(anchors: Tensor, keys: Tensor, n_batch: int, temperature: float) -> Tensor:
    """InfoNCE of anchors (N, d) against detached keys (N, d); row i's positive is key i.

    Rows ``[:n_batch]`` are the current batch, the rest memory-bank rows; the two groups are averaged
    separately and summed (the bank's group only when present). Inputs are L2-normalised.
    """
    logits = anchors @ keys.detach().t() / temperature
    labels = torch.arange(anchors.shape[0], device=anchors.device)
    per_row = F.cross_entropy(logits.float(), labels, reduction="none")
    loss = per_row[:n_batch].mean()
    if anchors.shape[0] > n_batch:
        loss = loss + per_row[n_batch:].mean()
    return loss


class ProjectionHead(nn.Module):
    """Linear -> ReLU -> Linear (hidden width = input width) -> L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_out))

    def forward(self, f: Tensor) -> Tensor:
        return F.normalize(self.net(f), dim=1)


class MemoryBank:
    """Fixed-size FIFO of feature rows; deterministic, checkpointable as three tensors."""

    def __init__(self, size: int, dim: int, device: torch.device) -> None:
        self.size = size
        self.dim = dim
        self.bank = torch.zeros(size, dim, device=device)
        self.ptr = 0  # next row to write
        self.count = 0  # rows filled so far (<= size)

    def add(self, feats: Tensor) -> None:
        if self.size == 0:
            return
        feats = feats.detach().to(self.bank.dtype)
        if feats.shape[0] > self.size:
            feats = feats[-self.size :]
        n = feats.shape[0]
        idx = (self.ptr + torch.arange(n, device=self.bank.device)) % self.size
        self.bank[idx] = feats
        self.ptr = (self.ptr + n) % self.size
        self.count = min(self.size, self.count + n)

    def items(self) -> Tensor:
        """Filled rows, oldest first."""
        if self.count < self.size:
            return self.bank[: self.count]
        return torch.cat([self.bank[self.ptr :], self.bank[: self.ptr]])

    def sample(self, k: int) -> Tensor:
        """Up to ``k`` distinct filled rows, drawn at random (all of them when ``k >= count``)."""
        filled = self.bank[: self.count]  # the filled rows (order is irrelevant to a random draw)
        if k >= self.count:
            return filled
        return filled[torch.randperm(self.count, device=self.bank.device)[:k]]

    def state(self, prefix: str = "cmi.") -> dict[str, Tensor]:
        return {
            prefix + "bank": self.bank.detach().cpu().clone(),  # CPU: checkpoint-ready
            prefix + "bank_ptr": torch.tensor(self.ptr, dtype=torch.int64),
            prefix + "bank_count": torch.tensor(self.count, dtype=torch.int64),
        }

    def load_state(self, tensors: dict[str, Tensor], prefix: str = "cmi.") -> None:
        bank = tensors[prefix + "bank"]
        if tuple(bank.shape) != (self.size, self.dim):
            raise ValueError(f"memory bank shape {tuple(bank.shape)} != expected {(self.size, self.dim)}")
        self.bank.copy_(bank.to(self.bank.device, self.bank.dtype))
        self.ptr = int(tensors[prefix + "bank_ptr"])
        self.count = int(tensors[prefix + "bank_count"])
        if not (0 <= self.ptr < max(self.size, 1) and 0 <= self.count <= self.size):
            raise ValueError(f"memory bank pointer/count out of range: ptr={self.ptr} count={self.count}")


def _num_classes(teacher: nn.Module) -> int:
    n = getattr(teacher, "num_classes", None)
    if isinstance(n, int):
        return n
    linears = [m for m in teacher.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BadInput("cannot tell the teacher's class count (no num_classes, no Linear layer)", field="teacher.arch")
    return linears[-1].out_features


# -- the synthesizer ----------------------------------------------------------------------------


@SYNTHESIZERS.register("cmi")
class CMISynthesizer(Synthesizer):
    def __init__(self, teacher: nn.Module, generator: nn.Module, cfg: Config, device: torch.device) -> None:
        super().__init__(teacher, generator, cfg, device)
        d = cfg.dfkd
        dim = self.hooks.feature_dim
        self.num_classes = _num_classes(teacher)
        # The latents: a leaf refilled for every batch, optimised with the generator.
        self.z = torch.zeros(self.batch_size, self.nz, device=self.device, requires_grad=True)
        self.opt_g = torch.optim.Adam(
            [{"params": list(self.generator.parameters())}, {"params": [self.z]}], lr=cfg.generator.lr, betas=(0.5, 0.999)
        )
        self.head = ProjectionHead(dim, d.cmi_head_dim).to(self.device)
        self.opt_head = torch.optim.Adam(self.head.parameters(), lr=cfg.generator.lr)
        self.bank = MemoryBank(d.cmi_bank_size, 2 * dim, self.device)  # rows: local then global features

    def _wants_instance_features(self) -> bool:
        return True

    def _new_batch(self) -> Tensor:
        """Re-initialise generator (if configured) and latents, reset the Adam moments; draw targets."""
        d = self.cfg.dfkd
        if d.cmi_reset_generator:
            reset_parameters(self.generator)
            _same_on_every_rank(self.generator)
        with torch.no_grad():
            if self.z.shape[0] != self.batch_size:  # the trainer gives each data-parallel rank its share
                self.z.data = self.z.new_empty(self.batch_size, self.nz)
            self.z.normal_()
        self.opt_g.state.clear()
        return sample_targets(self.batch_size, self.num_classes, d.cmi_targets, self.device)

    def generator_step(self, student: nn.Module, guide: Guide | None = None) -> GeneratorStep:
        """``g_steps`` inversion steps on one latent batch; returns the lowest-loss batch.

        A ``guide`` plans every step on that step's detached batch (sample i is latent i throughout):
        its weights apply to the one-hot and adversarial terms, its completion samples join the
        global view for BN statistics only, and its extra loss sees the global view and its logits.
        """
        d = self.cfg.dfkd
        # A DDP-wrapped student is called through .module: its gradient hooks must not fire here.
        plain = student.module if isinstance(student, nn.parallel.DistributedDataParallel) else student
        self.generator.train()
        self.head.train()
        targets = self._new_batch()
        params = [*self.generator.parameters(), self.z, *self.head.parameters()]
        best: tuple[float, dict[str, float], Tensor, Tensor | None] | None = None
        for _ in range(d.cmi_g_steps):
            x = self.generator(self.z)
            plan = guide.plan(x.detach()) if guide is not None else GuidePlan()
            g_view = global_view(x, d.cmi_global_pad)
            b = g_view.shape[0]
            seen = g_view if plan.completion is None else torch.cat([g_view, plan.completion.to(g_view.dtype)])
            with self.hooks.capture():
                t_out = self.teacher(seen)[:b]
                loss_bn = self.hooks.bn_loss()
                g_feat = self.hooks.instance_features()[:b]  # a guide's completion rows are not ours
            ce = F.cross_entropy(t_out.float(), targets, reduction="none")
            loss_oh = reduce_per_sample(ce, "batchmean", plan.weights)
            parts = {"bn": loss_bn, "oh": loss_oh}
            total = d.w_bn * loss_bn + d.w_oh * loss_oh
            if d.cmi_w_adv > 0:
                with frozen_eval(plain):
                    s_out = plain(g_view)
                adv_w = plan.adv_weights if plan.adv_weights is not None else plan.weights
                parts["adv"] = decision_adversarial(s_out, t_out, d.cmi_adv_agree_only, adv_w)
                total = total + d.cmi_w_adv * parts["adv"]
            feats = None
            if d.cmi_w_cr > 0:
                with self.hooks.capture():
                    self.teacher(local_view(x, d.cmi_local_scale_min))
                    l_feat = self.hooks.instance_features()
                bank_local, bank_global = self.bank.sample(d.cmi_n_neg).chunk(2, dim=1)
                anchors, keys = self.head(torch.cat([l_feat, bank_local, g_feat, bank_global])).chunk(2)
                parts["cr"] = contrastive_loss(anchors, keys, self.batch_size, d.cmi_cr_temperature)
                total = total + d.cmi_w_cr * parts["cr"]
                feats = torch.cat([l_feat, g_feat], dim=1).detach()
            self.hooks.clear()
            extra = guide.extra_loss(g_view, t_out) if guide is not None else None
            if extra is not None:
                parts["extra"] = extra
                total = total + extra
            cost = float(total.detach())
            if not math.isfinite(cost):
                bad = {k: float(v.detach()) for k, v in parts.items()}
                raise NonFiniteLoss(f"generator loss is not finite: {cost} (terms: {bad})")
            if best is None or cost < best[0]:  # the reference keeps the best batch, not the last
                best = (cost, {k: float(v.detach()) for k, v in parts.items()}, x.detach(), feats)
            self._update(total, params, [self.opt_g, self.opt_head])
        assert best is not None  # g_steps >= 1
        cost, parts_f, x_best, feats_best = best
        if feats_best is not None:
            self.bank.add(feats_best)
        return GeneratorStep(loss=cost, parts=parts_f, x=x_best.float())

    @torch.no_grad()
    def sample(self, n: int | None = None) -> Tensor:
        """The generator's current output on the batch's optimised latents (the first ``n``).

        A CMI batch is its latents: fresh random z would read a generator fitted to other z (and,
        with ``reset_generator``, re-initialised for the next batch anyway). More variety for the
        student comes from the trainer's replay pool (``dfkd.pool_size``), as in the reference.
        """
        self.generator.train()
        return self.generator(self.z[: n or self.batch_size]).detach().float()

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "head": self.head}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "head": self.opt_head}

    def extra_state(self) -> dict[str, Tensor]:
        return self.bank.state()

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        self.bank.load_state(tensors)
