"""Teacher training and caching: the loop every teacher kind shares.

``teacher.kind`` picks the per-batch loss from ``core.teachers.kinds`` (registry ``TEACHER_KINDS``):
``sl`` (the supervised control), ``ntl-target``, ``ntl-source``, ``cuti`` (non-transferable).
This module owns what they share: data, seeding, the Adam optimizer with its per-step decay, the
non-finite guard, progress reports, evaluation on both test splits, and the cache.

``train_teacher`` is deterministic for ``teacher.seed`` (default ``run.seed``) on CPU and leaves the caller's RNG state
untouched. ``get_teacher`` loads ``teacher.path`` or a cached teacher under
``<data.root>/teachers/``, training and caching one when absent.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel

from core.errors import BadInput, NonFiniteLoss
from core.eval import accuracy, resolve_device
from core.threads import apply_threads
from core.models import Classifier, create_model
from core.teachers.base import TEACHER_KINDS, random_shift

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
        bs = min(tc.batch_size, len(x_id))
        kind = TEACHER_KINDS.get(tc.kind, field="teacher.kind")(tc, model, ood_data, g, device)
        if kind.uses_ood_images and len(ood_data.train_x) == 0:
            raise BadInput(f"OOD domain {cfg.data.ood_domain!r} has no training images", field="data.ood_domain")
        steps_per_epoch = max(1, len(x_id) // bs)
        total = steps_per_epoch * tc.epochs
        step = 0
        for epoch in range(1, tc.epochs + 1):
            perm = torch.randperm(len(x_id), generator=g)
            for i in range(steps_per_epoch):
                idx = perm[i * bs : (i + 1) * bs]
                xb = random_shift(x_id[idx], tc.shift, g).to(device)
                yb = y_id[idx].to(device)
                loss, parts = kind.loss(xb, yb, step, detail=progress is not None)
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
    from core.teachers.files import load_teacher, save_teacher

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
