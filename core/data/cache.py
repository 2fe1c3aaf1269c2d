"""On-disk cache of built domains: safetensors (never pickle), written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from core.data.domain import Split

# Bump when any builder's output changes, so stale caches are ignored rather than trusted.
DATA_VERSION = 2
_KEYS = ("train_x", "train_y", "test_x", "test_y")


def cache_path(root: Path, name: str, seed: int) -> Path:
    safe = name.replace(":", "_").replace("/", "_")
    return root / "cache" / f"{safe}-seed{seed}-v{DATA_VERSION}.safetensors"


def read(path: Path) -> Split | None:
    """The cached split, or None when absent or unreadable (a torn file is simply rebuilt)."""
    if not path.is_file():
        return None
    try:
        t = load_file(str(path))
        return tuple(t[k] for k in _KEYS)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - any corruption means "rebuild"
        return None


def write(path: Path, split: Split, meta: dict[str, str]) -> None:
    """Write via a temp file in the same directory, fsync, then os.replace (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in zip(_KEYS, split)}, tmp, metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

