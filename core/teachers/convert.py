"""Convert a trusted PyTorch ``.pt``/``.pth`` teacher into a safetensors teacher file.

Loading a pickle can run arbitrary code, so nothing in atesc ever does it implicitly:
``core.teachers.files.load_teacher`` refuses pickle files and points here. ``convert_teacher`` only
calls ``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors, dicts, lists,
numbers, strings; any other global, such as a crafted ``__reduce__``, is rejected before it runs)
and only after the caller passed ``trust=True`` (the ``--trust`` flag of ``atesc convert``).

The output is written to a temporary file next to ``dst``, loaded back with ``load_teacher``
(the same checks every teacher goes through), and only then renamed into place; ``dst`` is never
overwritten unless ``force`` is given.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from core.errors import BadInput, require_file

# Keys under which training scripts commonly nest the model's state dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "teacher", "module", "weights")
STRIP_PREFIXES = ("module.", "_orig_mod.", "model.")
REFERENCE_WIDTH = 8


def _check_source(src: Path) -> None:
    where = str(src)
    require_file(src, "a .pt/.pth file")
    try:
        with open(src, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", where=where) from None
    if not head:
        raise BadInput("empty file, expected a PyTorch checkpoint", where=where)


def _check_destination(dst: Path, force: bool) -> None:
    where = str(dst)
    if dst.suffix != ".safetensors":
        raise BadInput("output must end in .safetensors", where=where)
    if dst.is_dir():
        raise BadInput("is a directory, expected an output .safetensors file", where=where)
    if dst.exists() and not force:
        raise BadInput("already exists; pass --force to overwrite it", where=where)
    if not dst.parent.is_dir():
        raise BadInput("output folder does not exist", where=str(dst.parent))


def _torch_load(src: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it references {found.group(1)}" if found else "it holds more than tensors"
        raise BadInput(
            f"refused by torch.load(weights_only=True): {what}, which is never run; save the model's "
            "state_dict() (plain tensors) with torch.save and convert that file",
            where=str(src),
        ) from None
    except (RuntimeError, ValueError, EOFError, OSError, AttributeError, ImportError, KeyError, TypeError) as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise BadInput(f"not a readable PyTorch checkpoint: {first[:200]}", where=str(src)) from None


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def extract_state_dict(obj: Any, where: str) -> dict[str, Any]:
    """The flat ``{name: tensor}`` state dict inside what ``torch.load`` returned."""
    import torch

    if _is_tensor_dict(obj):
        state = obj
    elif isinstance(obj, dict):
        nested = [obj[k] for k in NESTED_KEYS if k in obj and _is_tensor_dict(obj[k])]
        if not nested:
            tensors = {k: v for k, v in obj.items() if isinstance(k, str) and torch.is_tensor(v)}
            if not tensors:
                keys = ", ".join(sorted(map(str, obj))[:8])
                raise BadInput(f"no state dict of tensors found (top-level keys: {keys})", where=where)
            state = tensors
        else:
            state = nested[0]
    else:
        raise BadInput(f"holds a {type(obj).__name__}, expected a state dict of tensors", where=where)
    for prefix in STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def infer_width(arch: str, state: dict[str, Any], *, num_classes: int, in_ch: int, where: str) -> int:
    """The width whose first weight matches the file: build ``arch`` at a reference width and scale."""
    from core.models import create_model

    ref = create_model(arch, num_classes=num_classes, width=REFERENCE_WIDTH, in_ch=in_ch, field="--arch")
    for name, value in ref.state_dict().items():
        if value.dim() >= 2 and name in state and state[name].dim() == value.dim():
            got = int(state[name].shape[0])
            width, rem = divmod(got * REFERENCE_WIDTH, int(value.shape[0]))
            if rem == 0 and width >= 1:
                return width
            break
    raise BadInput(f"cannot infer the width of a {arch!r} from this file; pass --width", where=where)


def convert_teacher(
    src: str | Path,
    dst: str | Path,
    *,
    trust: bool,
    arch: str = "cnn",
    width: int | None = None,
    num_classes: int | None = None,
    in_ch: int | None = None,
    kind: str = "unknown",
    force: bool = False,
) -> dict[str, Any]:
    """Convert ``src`` (pickle-based PyTorch file) into a safetensors teacher at ``dst``.

    Returns a summary (arch, width, classes, tensors, sha256 of the source). Every problem is a
    one-line ``BadInput`` naming the file (and tensor); ``dst`` is untouched on any error.
    """
    src, dst = Path(src), Path(dst)
    if not trust:
        raise BadInput(
            "refusing to load a pickle-based file without --trust: unpickling can run arbitrary code. "
            "Pass --trust only for files whose origin you trust (it is loaded with torch.load(weights_only=True))",
            where=str(src),
        )
    _check_source(src)
    _check_destination(dst, force)
    where = str(src)
    state = extract_state_dict(_torch_load(src), where)

    import torch
    from safetensors.torch import save

    from core.teachers.files import FORMAT, load_teacher

    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise BadInput("holds NaN/Inf values", where=where, field=name)
    if num_classes is None:
        head = state.get("head.weight")
        num_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else 10
    if in_ch is None:
        first = next((t for t in state.values() if t.dim() == 4), None)
        in_ch = int(first.shape[1]) if first is not None else 3
    if width is None:
        width = infer_width(arch, state, num_classes=num_classes, in_ch=in_ch, where=where)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    metadata = {
        "format": FORMAT,
        "arch": arch,
        "width": str(width),
        "num_classes": str(num_classes),
        "in_ch": str(in_ch),
        "kind": kind,
        "converted_from": src.name,
        "source_sha256": digest,
    }
    blob = save(state, metadata=metadata)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            load_teacher(tmp)  # the same checks any run applies to a teacher file
        except BadInput as exc:
            raise BadInput(exc.message, where=where, field=exc.field) from None
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "source": str(src), "output": str(dst), "arch": arch, "width": width, "num_classes": num_classes,
        "in_ch": in_ch, "kind": kind, "tensors": len(state), "source_sha256": digest,
    }
