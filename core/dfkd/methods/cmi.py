"""CMI: Contrastive Model Inversion (Fang et al., IJCAI 2021).

DFQ's terms (BN matching, one-hot, balance, adversarial) plus an instance-discrimination
contrastive term, weight ``w_cr``, temperature ``cr_temperature``:

- The instance feature of a sample is, as in CMI's code, the concatenation over the teacher's
  BatchNorm2d layers of the per-sample channel means of each BN input (no extra teacher forward).
- A small MLP head (``head_dim`` outputs, L2-normalised) maps features to embeddings. The head is
  trained jointly with the generator (its own Adam, same learning rate and betas).
- Positives: a sample and its augmented view (random horizontal flip + random crop-shift of up to
  4 pixels, replicate padding). Negatives: the other samples of the batch and every entry of the
  memory bank.
- The memory bank is a FIFO of teacher features (not images) of the previous synthetic batches,
  ``bank_size`` rows; negatives are re-embedded by the current head each step. It is saved through
  ``extra_state`` (``cmi.bank``, ``cmi.bank_ptr``, ``cmi.bank_count``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.dfkd.base import SYNTHESIZERS, GeneratorStep, Guide, Synthesizer

if TYPE_CHECKING:  # annotations only: importable without pydantic
    from core.config import Config

AUG_SHIFT = 4


class MLPHead(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, dim_out), nn.ReLU(inplace=True), nn.Linear(dim_out, dim_out))

    def forward(self, f: Tensor) -> Tensor:
        return F.normalize(self.net(f), dim=1)


def augment(x: Tensor, shift: int = AUG_SHIFT) -> Tensor:
    """Cheap differentiable augmentation: per-sample random horizontal flip and crop-shift."""
    b, _, h, w = x.shape
    flip = torch.rand(b, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if shift <= 0:
        return x
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    oy = torch.randint(0, 2 * shift + 1, (b,), device=x.device)
    ox = torch.randint(0, 2 * shift + 1, (b,), device=x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)[None, :]  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


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


def contrastive_loss(q: Tensor, k: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """InfoNCE: anchor q_i, positive k_i, negatives k_j (j != i) and the bank. Inputs normalised."""
    keys = torch.cat([k, negatives]) if negatives.numel() else k
    logits = q @ keys.t() / temperature
    target = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits.float(), target)


@SYNTHESIZERS.register("cmi")
class CMISynthesizer(Synthesizer):
    def __init__(self, teacher: nn.Module, generator: nn.Module, cfg: Config, device: torch.device) -> None:
        super().__init__(teacher, generator, cfg, device)
        dim = self.hooks.feature_dim
        self.head = MLPHead(dim, cfg.dfkd.head_dim).to(self.device)
        self.opt_head = torch.optim.Adam(self.head.parameters(), lr=cfg.generator.lr, betas=(0.5, 0.999))
        self.bank = MemoryBank(cfg.dfkd.bank_size, dim, self.device)

    def _wants_instance_features(self) -> bool:
        return True

    def generator_step(self, student: nn.Module, guide: Guide | None = None) -> GeneratorStep:
        d = self.cfg.dfkd
        self.generator.train()
        self.head.train()
        x = self.generator(self.sample_z())
        plan = guide.plan(x.detach()) if guide is not None else None
        total, parts, t_out = self._dfq_terms(x, student, plan)
        feats = self.hooks.instance_features()[: x.shape[0]]  # the guide's completion rows are not ours
        if d.w_cr > 0:
            with self.hooks.capture():
                self.teacher(augment(x))
                feats_aug = self.hooks.instance_features()
            q = self.head(feats)
            k = self.head(feats_aug)
            negatives = self.head(self.bank.items()) if self.bank.count else feats.new_zeros(0, q.shape[1])
            loss_cr = contrastive_loss(q, k, negatives, d.cr_temperature)
            parts["cr"] = loss_cr
            total = total + d.w_cr * loss_cr
        self.hooks.clear()
        params = list(self.generator.parameters()) + list(self.head.parameters())
        step = self._finish(total, parts, x, guide, t_out, params, [self.opt_g, self.opt_head])
        self.bank.add(feats)
        return step

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "head": self.head}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "head": self.opt_head}

    def extra_state(self) -> dict[str, Tensor]:
        return self.bank.state()

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        self.bank.load_state(tensors)
