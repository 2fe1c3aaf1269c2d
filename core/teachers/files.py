"""Teacher files: safetensors weights plus string metadata. Never unpickles anything.

Metadata keys: ``config`` (the resolved config as TOML), ``arch``, ``width``, ``num_classes``,
``in_ch``, ``kind``, ``teacher_acc_id``, ``teacher_acc_ood`` and ``format`` (``atesc-teacher/1``).

``load_teacher`` validates the file before handing it to safetensors: pickle-based checkpoints
(``.pt``/``.pth``/...) are refused with a pointer to ``atesc convert --trust``; the 8-byte header
length is checked against the file size, the header must be a JSON object and every tensor's byte
range must lie inside the file, so truncated or garbage files give one-line ``BadInput`` errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from core.errors import BadInput
from core.rundir.safefile import read_safetensors, write_atomic

FORMAT = "atesc-teacher/1"
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar"}
_CONVERT_HINT = (
    "pickle-based checkpoints are never loaded; if you trust its origin, convert it with "
    "`atesc convert --trust FILE OUT.safetensors` and pass the .safetensors file"
)


def teacher_metadata(model: nn.Module, cfg: Any, acc_id: float, acc_ood: float) -> dict[str, str]:
    return {
        "format": FORMAT,
        "config": cfg.to_toml(),
        "arch": cfg.teacher.arch,
        "width": str(cfg.teacher.width),
        "num_classes": str(getattr(model, "num_classes", "")),
        "in_ch": str(getattr(model, "in_ch", "")),
        "kind": cfg.teacher.kind,
        "teacher_acc_id": f"{acc_id:.6f}",
        "teacher_acc_ood": f"{acc_ood:.6f}",
    }


def save_teacher(path: str | Path, model: nn.Module, cfg: Any, acc_id: float, acc_ood: float) -> Path:
    """Save ``model``'s state dict and metadata to ``path`` atomically; returns the path."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, save(tensors, metadata=teacher_metadata(model, cfg, acc_id, acc_ood)))
    return path


def load_teacher(
    path: str | Path,
    *,
    arch: str | None = None,
    width: int | None = None,
    num_classes: int | None = None,
    in_ch: int | None = None,
) -> tuple[nn.Module, dict[str, str]]:
    """Load a teacher saved by ``save_teacher`` (or converted by ``atesc convert``), in eval mode.

    The architecture comes from the file's metadata; ``arch``/``width``/``num_classes``/``in_ch``
    fill in what the metadata lacks. Missing, unexpected or wrongly shaped tensors are
    ``BadInput`` errors naming the file and the tensor.
    """
    from core.models import create_model

    where = str(path)
    if Path(path).suffix.lower() in PICKLE_SUFFIXES:
        raise BadInput(f"{Path(path).suffix} files are not accepted: {_CONVERT_HINT}", where=where)
    tensors, meta = read_safetensors(path, pickle_hint=_CONVERT_HINT)

    def pick(key: str, fallback: Any, cast: type) -> Any:
        raw = meta.get(key)
        if raw not in (None, ""):
            try:
                return cast(raw)
            except ValueError:
                raise BadInput(f"metadata {key}={raw!r} is not a valid {cast.__name__}", where=where) from None
        return fallback

    arch_ = pick("arch", arch, str)
    width_ = pick("width", width, int)
    if arch_ is None or width_ is None:
        raise BadInput("metadata lacks arch/width and none were given (set teacher.arch and teacher.width)", where=where)
    if num_classes is None and "head.weight" in tensors and tensors["head.weight"].dim() == 2:
        num_classes = tensors["head.weight"].shape[0]
    nc = pick("num_classes", num_classes if num_classes is not None else 10, int)
    ic = pick("in_ch", in_ch if in_ch is not None else 3, int)
    try:
        model = create_model(arch_, num_classes=nc, width=width_, in_ch=ic)
    except BadInput as exc:
        raise BadInput(exc.message, where=where, field="arch") from None
    expected = model.state_dict()
    for name, ref in expected.items():
        if name not in tensors:
            raise BadInput(f"missing tensor for {arch_} (width {width_})", where=where, field=name)
        got = tensors[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise BadInput(
                f"shape {list(got.shape)} does not match {arch_} (width {width_}) which needs {list(ref.shape)}",
                where=where,
                field=name,
            )
        if got.dtype.is_floating_point != ref.dtype.is_floating_point:
            raise BadInput(f"dtype {got.dtype} where {ref.dtype} is expected", where=where, field=name)
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise BadInput(f"unexpected tensor for {arch_} (width {width_})", where=where, field=extra[0])
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise BadInput("holds NaN/Inf values", where=where, field=name)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    model.eval()
    return model, meta
