"""Teacher files: safetensors weights plus string metadata. Never unpickles anything.

Metadata keys: ``config`` (the resolved config as TOML), ``arch``, ``width``, ``num_classes``,
``in_ch``, ``kind``, ``teacher_acc_id``, ``teacher_acc_ood`` and ``format`` (``atesc-teacher/1``).

``load_teacher`` validates the file before handing it to safetensors: pickle-based checkpoints
(``.pt``/``.pth``/...) are refused with a pointer to ``atesc convert --trust``; the 8-byte header
length is checked against the file size, the header must be a JSON object and every tensor's byte
range must lie inside the file, so truncated or garbage files give one-line ``BadInput`` errors.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from core.errors import BadInput

FORMAT = "atesc-teacher/1"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar"}
_CONVERT_HINT = (
    "pickle-based checkpoints are never loaded; if you trust its origin, convert it with "
    "`atesc convert --trust FILE OUT.safetensors` and pass the .safetensors file"
)
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable too
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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
    atomic_write_bytes(path, save(tensors, metadata=teacher_metadata(model, cfg, acc_id, acc_ood)))
    return path


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """Validate the file's framing and return its JSON header (``__metadata__`` included).

    Raises ``BadInput`` (naming the file, and the tensor where one is at fault) for a missing file,
    a pickle/zip checkpoint, a truncated file, an absurd header length or a malformed header.
    """
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise BadInput("teacher file not found", where=where)
    if path.is_dir():
        raise BadInput("is a directory, expected a .safetensors teacher file", where=where)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BadInput(f"{path.suffix} files are not accepted: {_CONVERT_HINT}", where=where)
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise BadInput(f"truncated: {size} bytes, not a safetensors file", where=where)
            if head[:2] == b"PK" or head[:1] == b"\x80":
                raise BadInput(f"looks like a pickle/zip checkpoint: {_CONVERT_HINT}", where=where)
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise BadInput(
                    f"not a safetensors file or truncated (header length {n} bytes, file is {size} bytes)", where=where
                )
            raw = f.read(n)
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", where=where) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput("not a safetensors file (header is not JSON)", where=where) from None
    if not isinstance(header, dict):
        raise BadInput("not a safetensors file (header is not a JSON object)", where=where)
    data_bytes = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise BadInput("malformed safetensors metadata", where=where)
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
            numel = 1
            for d in shape:
                numel *= int(d)
            expected = numel * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise BadInput("malformed tensor entry in the safetensors header", where=where, field=name) from None
        if not (0 <= begin <= end) or end - begin != expected:
            raise BadInput(f"byte range {begin}..{end} does not match {dtype}{shape}", where=where, field=name)
        if end > data_bytes:
            raise BadInput(
                f"truncated: tensor data ends at byte {end} but the file holds {data_bytes} data bytes",
                where=where,
                field=name,
            )
    return header


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Validated safetensors read: (tensors on CPU, string metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = read_safetensors_header(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInput(f"unreadable safetensors file: {' '.join(str(exc).split())}", where=str(path)) from None
    return tensors, dict(header.get("__metadata__") or {})


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
    tensors, meta = load_state(path)

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
