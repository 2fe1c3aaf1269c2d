"""Files that must never be half-written or trusted blindly: atomic writes and safetensors reads.

``read_safetensors_header`` validates the framing (header length against the file size, JSON
header, every tensor's byte range) before any parser sees the data, so a truncated, hostile or
pickle file becomes a one-line ``BadInput`` naming the file and the tensor. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import pickletools
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import BadInput, require_file

if TYPE_CHECKING:  # torch loads only when a file is read (the CLI's light commands write files too)
    import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_PICKLE_HINT = "pickle files are never loaded"
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_PICKLE_OPCODES = frozenset(op.code for op in pickletools.opcodes)


def write_atomic(path: Path, data: bytes, *, before_rename: Callable[[Path], None] | None = None) -> None:
    """Write ``path`` via a temp file in the same folder: fsync, rename, fsync the folder.

    ``before_rename`` runs once the temp file is durable (a fault-injection point for tests).
    Errors name the file, so a full disk reads ``<file>: No space left on device``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def looks_like_pickle(prefix: bytes) -> bool:
    """A zip archive (``torch.save``'s default) or a pickle stream: PROTO 2-5, then an opcode."""
    if prefix[:4] == b"PK\x03\x04":
        return True
    return len(prefix) >= 3 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5 and chr(prefix[2]) in _PICKLE_OPCODES


def read_safetensors_header(path: str | Path, *, pickle_hint: str = _PICKLE_HINT) -> dict[str, Any]:
    """Validate the file's framing and return its JSON header (``__metadata__`` included).

    Raises ``BadInput`` (naming the file, and the tensor where one is at fault) for a missing file,
    a pickle/zip checkpoint, a truncated file, an absurd header length or a malformed header.
    """
    path = Path(path)
    where = str(path)
    require_file(path, "a .safetensors file")
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            prefix = f.read(64)
            f.seek(0)
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            raw = f.read(n) if 2 <= n <= min(MAX_HEADER_BYTES, size - 8) else None
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", where=where) from None
    # The format is decided by parsing: the first 8 bytes are the header length, so a valid file
    # may start with any byte (0x80 included). Only a file that does not parse is compared with
    # the pickle/zip signatures, for a better message.
    try:
        if n < 0:
            raise BadInput(f"truncated: {size} bytes, not a safetensors file", where=where)
        if raw is None:
            raise BadInput(
                f"not a safetensors file or truncated (header length {n} bytes, file is {size} bytes)", where=where
            )
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadInput("not a safetensors file (header is not JSON)", where=where) from None
        if not isinstance(header, dict):
            raise BadInput("not a safetensors file (header is not a JSON object)", where=where)
    except BadInput:
        if looks_like_pickle(prefix):
            raise BadInput(f"looks like a pickle/zip checkpoint: {pickle_hint}", where=where) from None
        raise
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


def read_safetensors(path: str | Path, *, pickle_hint: str = _PICKLE_HINT) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Validated safetensors read: (tensors on CPU, string metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    header = read_safetensors_header(path, pickle_hint=pickle_hint)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInput(f"unreadable safetensors file: {' '.join(str(exc).split())}", where=str(path)) from None
    return tensors, dict(header.get("__metadata__") or {})


