"""Teacher training: supervised control and non-transferable (NTL) teachers.

``teacher.kind``:

- ``sl``: cross-entropy on the ID domain (the control).
- ``ntl-target``: target-specified NTL (Wang et al., ICLR 2022), reference form
  ``L = KL_id - min(1, alpha * KL_ood) * min(1, beta * MMD(f_id, f_ood))`` on a joint ID+OOD
  batch (shared BatchNorm statistics, as the reference trains it).
- ``ntl-source``: the same loss, but the OOD half is synthesised from the ID batch with
  ``teacher.source_augs`` (stamped patches of random size/position/colour, colour shift, blur,
  noise) and keeps the ID labels; the real OOD domain is only used for reporting.
- ``cuti``: CUTI-domain (Wang et al., CVPR 2023): on odd steps the OOD half's feature map after
  every block is re-styled with the ID half's per-instance channel mean/std passed through freshly
  drawn random 1x1 maps and a sigmoid (intermediate domains); loss ``KL_id - min(1, alpha*KL_ood)``.

``KL(p, onehot_y)`` is the per-sample KL divergence to the one-hot label averaged over the batch
(equal to the cross-entropy). The reference averages over batch *and* classes (KLDivLoss 'mean'),
i.e. divides by the number of classes; that only moves the point where the OOD clamp engages
(alpha * KL_ood >= 1), which here is at a cross-entropy of 1/alpha = 10 nats.

``train_teacher`` is deterministic for ``teacher.seed`` (default ``run.seed``) on CPU and leaves the caller's RNG state
untouched. ``get_teacher`` loads ``teacher.path`` or a cached teacher under
``<data.root>/teachers/``, training and caching one when absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel

from core.errors import BadInput, NonFiniteLoss
from core.eval import accuracy, resolve_device
from core.models import Classifier, create_model
from core.threads import apply_threads

if TYPE_CHECKING:
    from core.config import Config
    from core.data import DomainData

TEACHER_CACHE_VERSION = 2  # bump when training code changes what a config produces


class TeacherProgress(BaseModel):
    epoch: int
    epochs: int
    step: int  # global step, 1-based
    steps: int  # total steps
    loss: float
    kl_id: float | None = None  # NTL kinds: KL to the ID labels
    kl_ood: float | None = None  # NTL kinds: KL to the OOD labels (unclamped, unweighted)
    mmd: float | None = None  # ntl-target / ntl-source: feature MMD (unweighted)


@dataclass
class TeacherResult:
    model: Classifier
    acc_id: float
    acc_ood: float
    seconds: float
    epochs: int
    kind: str = ""
    path: Path | None = None  # file it was loaded from or saved to
    source: str = "trained"  # trained | cache | file
    metadata: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Losses (pure functions)


def kl_onehot(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(onehot(y) || softmax(logits)) (= cross-entropy)."""
    return F.cross_entropy(logits, y)


def mmd(f1: torch.Tensor, f2: torch.Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> torch.Tensor:
    """Biased multi-bandwidth Gaussian MMD^2 between feature sets (N, D) and (M, D).

    Bandwidths are ``base * kernel_mul**k`` around the mean pairwise squared distance (detached),
    as in the reference implementation. Identical sets give exactly 0.
    """
    f1 = f1.flatten(1).float()
    f2 = f2.flatten(1).float()
    n, m = f1.shape[0], f2.shape[0]
    total = torch.cat([f1, f2])
    d2 = torch.cdist(total, total).pow(2)
    count = (n + m) * (n + m - 1)
    base = d2.detach().sum() / max(count, 1)
    base = base.clamp_min(1e-12) / kernel_mul ** (kernel_num // 2)
    k = sum(torch.exp(-d2 / (base * kernel_mul**i)) for i in range(kernel_num))
    assert isinstance(k, torch.Tensor)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def ntl_loss(
    logits_id: torch.Tensor,
    y_id: torch.Tensor,
    logits_ood: torch.Tensor,
    y_ood: torch.Tensor,
    f_id: torch.Tensor,
    f_ood: torch.Tensor,
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """``KL_id - min(1, alpha*KL_ood) * min(1, beta*MMD(f_id, f_ood))`` (a clamped factor has no gradient)."""
    kl_ood = (alpha * kl_onehot(logits_ood, y_ood)).clamp(max=1.0)
    dist = (beta * mmd(f_id, f_ood)).clamp(max=1.0)
    return kl_onehot(logits_id, y_id) - kl_ood * dist


def cuti_loss(
    logits_id: torch.Tensor, y_id: torch.Tensor, logits_ood: torch.Tensor, y_ood: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``KL_id - min(1, alpha * KL_ood)``."""
    return kl_onehot(logits_id, y_id) - (alpha * kl_onehot(logits_ood, y_ood)).clamp(max=1.0)


# ---------------------------------------------------------------------------------------------
# CUTI-domain feature re-styling


def instance_stats(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance channel mean and std of (N, C, H, W) feature maps, shaped (N, C, 1, 1)."""
    flat = x.flatten(2)
    mean = flat.mean(2)[..., None, None]
    std = (flat.var(2) + eps).sqrt()[..., None, None]
    return mean, std


@contextlib.contextmanager
def cuti_restyle(model: Classifier, n_id: int, generator: torch.Generator) -> Iterator[None]:
    """While active, every block's output ``[id; ood]`` (first ``n_id`` rows ID) becomes
    ``[id; ood * sigmoid(W_s std_id) + sigmoid(W_m mean_id)]`` with W_s, W_m fresh random 1x1 maps
    (uniform in +-1/sqrt(C), the default Conv2d init) drawn from ``generator`` at every call."""

    def hook(_module: nn.Module, _inputs: object, out: torch.Tensor) -> torch.Tensor:
        if out.dim() != 4 or out.shape[0] != 2 * n_id or out.shape[2] * out.shape[3] < 2:
            return out  # no spatial statistics on a 1x1 map
        c = out.shape[1]
        bound = 1.0 / math.sqrt(c)
        w = (torch.rand(2, c, c, generator=generator) * 2 - 1) * bound
        w = w.to(out.device, out.dtype)
        mean, std = instance_stats(out[:n_id])
        new_mean = torch.sigmoid(torch.einsum("oc,ncij->noij", w[0], mean))
        new_std = torch.sigmoid(torch.einsum("oc,ncij->noij", w[1], std))
        return torch.cat([out[:n_id], out[n_id:] * new_std + new_mean])

    handles = [block.register_forward_hook(hook) for block in model.blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------------------------
# Augmentations


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


def _aug_patch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    out = x.clone()
    sizes = torch.randint(4, 9, (n,), generator=g)
    for i in range(n):
        s = int(sizes[i])
        r = int(torch.randint(0, h - s + 1, (1,), generator=g))
        q = int(torch.randint(0, w - s + 1, (1,), generator=g))
        out[i, :, r : r + s, q : q + s] = torch.rand(c, s, s, generator=g).to(x.device)
    return out


def _aug_color(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, c = x.shape[:2]
    gain = (0.4 + 0.8 * torch.rand(n, c, 1, 1, generator=g)).to(x.device)
    offset = (0.2 + 0.4 * torch.rand(n, c, 1, 1, generator=g)).to(x.device)
    return (x * gain + offset * (1 - x)).clamp(0, 1)


def _aug_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    c = x.shape[1]
    sigma = 0.8 + 1.2 * float(torch.rand(1, generator=g))
    t = torch.arange(5, dtype=x.dtype, device=x.device) - 2
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    k = (k1[:, None] * k1[None, :]).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=c)


def _aug_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    sigma = (0.1 + 0.2 * torch.rand(x.shape[0], 1, 1, 1, generator=g)).to(x.device)
    return (x + sigma * torch.randn(x.shape, generator=g).to(x.device)).clamp(0, 1)


SOURCE_AUGS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "patch": _aug_patch,
    "color": _aug_color,
    "blur": _aug_blur,
    "noise": _aug_noise,
}


def synthesize_ood(x: torch.Tensor, augs: list[str], generator: torch.Generator) -> torch.Tensor:
    """Source-only NTL: each image gets every listed augmentation with probability 1/2 (at least
    one), giving a neighbourhood of shifted domains around the ID data."""
    if not augs:
        raise BadInput("teacher.source_augs is empty; ntl-source needs at least one", field="teacher.source_augs")
    n = x.shape[0]
    chosen = torch.rand(n, len(augs), generator=generator) < 0.5
    forced = torch.randint(0, len(augs), (n,), generator=generator)
    chosen[torch.arange(n), forced] = True
    out = x
    for j, name in enumerate(augs):
        mask = chosen[:, j].to(x.device)
        if mask.any():
            out = out.clone() if out is x else out
            out[mask] = SOURCE_AUGS[name](out[mask], generator)
    return out


# ---------------------------------------------------------------------------------------------
# Training


def _load_pair(cfg: Config) -> tuple[DomainData, DomainData]:
    from core.data import load_domain

    root = Path(cfg.data.root).expanduser()
    return (
        load_domain(cfg.data.id_domain, root, seed=cfg.teacher_seed),
        load_domain(cfg.data.ood_domain, root, seed=cfg.teacher_seed),
    )


def build_teacher_model(cfg: Config, num_classes: int = 10, in_ch: int = 3) -> Classifier:
    return create_model(
        cfg.teacher.arch, num_classes=num_classes, width=cfg.teacher.width, in_ch=in_ch, field="teacher.arch"
    )


def train_teacher(
    cfg: Config,
    *,
    progress: Callable[[TeacherProgress], None] | None = None,
    domains: tuple[DomainData, DomainData] | None = None,
) -> TeacherResult:
    """Train a teacher of ``cfg.teacher.kind`` on ``cfg.data`` and evaluate it on both test splits.

    ``domains`` (ID, OOD) skips loading from ``cfg.data`` (tests, benches on subsets).
    """
    tc = cfg.teacher
    start = time.perf_counter()
    id_data, ood_data = domains if domains is not None else _load_pair(cfg)
    device = resolve_device(cfg.run.device)
    apply_threads(cfg.run.threads)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.teacher_seed)
        g = torch.Generator().manual_seed(cfg.teacher_seed + 1)
        model = build_teacher_model(cfg, id_data.num_classes, id_data.train_x.shape[1]).to(device)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        x_id, y_id = id_data.train_x, id_data.train_y
        x_ood, y_ood = ood_data.train_x, ood_data.train_y
        bs = min(tc.batch_size, len(x_id))
        needs_ood = tc.kind in ("ntl-target", "cuti")
        if needs_ood and len(x_ood) == 0:
            raise BadInput(f"OOD domain {cfg.data.ood_domain!r} has no training images", field="data.ood_domain")
        steps_per_epoch = max(1, len(x_id) // bs)
        total = steps_per_epoch * tc.epochs
        step = 0
        ood_perm = torch.empty(0, dtype=torch.long)
        ood_pos = 0
        for epoch in range(1, tc.epochs + 1):
            perm = torch.randperm(len(x_id), generator=g)
            for i in range(steps_per_epoch):
                idx = perm[i * bs : (i + 1) * bs]
                xb = random_shift(x_id[idx], tc.shift, g).to(device)
                yb = y_id[idx].to(device)
                parts: dict[str, torch.Tensor] = {}
                if tc.kind == "sl":
                    loss = kl_onehot(model(xb), yb)
                else:
                    if tc.kind == "ntl-source":
                        xo = synthesize_ood(xb.cpu(), list(tc.source_augs), g).to(device)
                        yo = yb
                    else:
                        if ood_pos + bs > len(ood_perm):
                            ood_perm = torch.cat([ood_perm[ood_pos:], torch.randperm(len(x_ood), generator=g)])
                            while len(ood_perm) < bs:
                                ood_perm = torch.cat([ood_perm, torch.randperm(len(x_ood), generator=g)])
                            ood_pos = 0
                        oidx = ood_perm[ood_pos : ood_pos + bs]
                        ood_pos += bs
                        xo = random_shift(x_ood[oidx], tc.shift, g).to(device)
                        yo = y_ood[oidx].to(device)
                    both = torch.cat([xb, xo])
                    if tc.kind == "cuti":
                        ctx = cuti_restyle(model, len(xb), g) if step % 2 == 1 else contextlib.nullcontext()
                        with ctx:
                            logits = model(both)
                        loss = cuti_loss(logits[: len(xb)], yb, logits[len(xb) :], yo, tc.alpha)
                        n, ld = len(xb), logits.detach()
                        parts = {"kl_id": kl_onehot(ld[:n], yb), "kl_ood": kl_onehot(ld[n:], yo)}
                    else:
                        feats = model.features(both)
                        logits = model.head(feats)
                        n = len(xb)
                        loss = ntl_loss(logits[:n], yb, logits[n:], yo, feats[:n], feats[n:], tc.alpha, tc.beta)
                        ld, fd = logits.detach(), feats.detach()
                        parts = {"kl_id": kl_onehot(ld[:n], yb), "kl_ood": kl_onehot(ld[n:], yo)}
                        if progress is not None:
                            parts["mmd"] = mmd(fd[:n], fd[n:])
                step += 1
                value = float(loss.detach())
                if not math.isfinite(value):  # before the update: never step on a NaN gradient
                    raise NonFiniteLoss(f"teacher loss became {value} at step {step} (epoch {epoch})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for group in opt.param_groups:
                    group["lr"] *= tc.lr_decay
                if progress is not None:
                    extra = {k: float(v.detach()) for k, v in parts.items()}
                    progress(TeacherProgress(epoch=epoch, epochs=tc.epochs, step=step, steps=total, loss=value, **extra))
        model.eval()
    acc_id = accuracy(model, id_data.test_x, id_data.test_y)
    acc_ood = accuracy(model, ood_data.test_x, ood_data.test_y)
    return TeacherResult(
        model=model,
        acc_id=acc_id,
        acc_ood=acc_ood,
        seconds=time.perf_counter() - start,
        epochs=tc.epochs,
        kind=tc.kind,
    )


# ---------------------------------------------------------------------------------------------
# Loading, caching


def teacher_cache_key(cfg: Config) -> str:
    """sha256 of everything that decides the trained weights: teacher section (minus path),
    the domain pair, the seed and the training-code version."""
    teacher = cfg.teacher.model_dump(mode="json", exclude={"path", "seed"})
    blob = {
        "v": TEACHER_CACHE_VERSION,
        "teacher": teacher,
        "id_domain": cfg.data.id_domain,
        "ood_domain": cfg.data.ood_domain,
        "seed": cfg.teacher_seed,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:32]


def teacher_cache_path(cfg: Config) -> Path:
    return Path(cfg.data.root).expanduser() / "teachers" / f"{teacher_cache_key(cfg)}.safetensors"


def _meta_float(meta: dict[str, str], key: str) -> float | None:
    try:
        value = float(meta[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def get_teacher(
    cfg: Config,
    progress: Callable[[TeacherProgress], None] | None = None,
    *,
    domains: tuple[DomainData, DomainData] | None = None,
) -> TeacherResult:
    """The teacher ``cfg`` asks for: ``teacher.path`` if set (evaluated on ``cfg.data``), else a
    cached one under ``<data.root>/teachers/``, else a freshly trained one (then cached)."""
    from core.teacher_io import load_teacher, save_teacher

    device = resolve_device(cfg.run.device)
    if cfg.teacher.path is not None:
        start = time.perf_counter()
        path = Path(cfg.teacher.path).expanduser()
        model, meta = load_teacher(path, arch=cfg.teacher.arch, width=cfg.teacher.width)
        model.to(device)
        id_data, ood_data = domains if domains is not None else _load_pair(cfg)
        return TeacherResult(
            model=model,
            acc_id=accuracy(model, id_data.test_x, id_data.test_y),
            acc_ood=accuracy(model, ood_data.test_x, ood_data.test_y),
            seconds=time.perf_counter() - start,
            epochs=0,
            kind=meta.get("kind", ""),
            path=path,
            source="file",
            metadata=meta,
        )
    path = teacher_cache_path(cfg)
    if path.exists():
        start = time.perf_counter()
        try:
            model, meta = load_teacher(path)
        except BadInput:
            pass  # a corrupt cache entry is retrained and overwritten
        else:
            acc_id, acc_ood = _meta_float(meta, "teacher_acc_id"), _meta_float(meta, "teacher_acc_ood")
            if acc_id is None or acc_ood is None:
                id_data, ood_data = domains if domains is not None else _load_pair(cfg)
                acc_id = accuracy(model, id_data.test_x, id_data.test_y)
                acc_ood = accuracy(model, ood_data.test_x, ood_data.test_y)
            return TeacherResult(
                model=model.to(device),
                acc_id=acc_id,
                acc_ood=acc_ood,
                seconds=time.perf_counter() - start,
                epochs=0,
                kind=meta.get("kind", cfg.teacher.kind),
                path=path,
                source="cache",
                metadata=meta,
            )
    result = train_teacher(cfg, progress=progress, domains=domains)
    save_teacher(path, result.model, cfg, result.acc_id, result.acc_ood)
    result.path = path
    return result
