"""safetensors checkpoints: one file per step holding everything needed to resume bit-exactly.

Tensors are flattened under prefixes (``model/<name>/...``, ``optim/<name>/<param>/<key>``,
``rng/...``, ``extra/...``); everything that is not a tensor (optimizer param groups, step, the
resolved config, python/numpy RNG bookkeeping) goes into the string metadata as JSON or TOML.
Nothing is ever unpickled. Files are written to a temporary name, fsynced, then renamed.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save

from core.rundir import safefile
from core.errors import BadInput

FORMAT = "atesc-checkpoint-1"
LATEST = "latest"

# Test hook: called after the temporary file is durable and before the rename (fault injection).
before_rename: Callable[[Path], None] | None = None


# ---------------------------------------------------------------- flattening


def flatten_optimizer(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{name}/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix) :].split("/", 1)
            state.setdefault(int(pid), {})[field] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a run draws from: torch (CPU and CUDA), numpy and python ``random``."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(np_keys, dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    tensors["rng/python"] = torch.tensor(py_state, dtype=torch.int64)
    meta = {"numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)], "python": [py_version, py_gauss]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    np_name, np_pos, np_has_gauss, np_gauss = meta["numpy"]
    keys = tensors["rng/numpy"].numpy().astype(np.uint32)
    np.random.set_state((np_name, keys, int(np_pos), int(np_has_gauss), float(np_gauss)))
    py_version, py_gauss = meta["python"]
    random.setstate((py_version, tuple(int(v) for v in tensors["rng/python"].tolist()), py_gauss))


# ---------------------------------------------------------------- state bundle


class TrainState:
    """What a checkpoint holds, in memory: modules, optimizers, extra tensors, JSON extras, step."""

    def __init__(
        self,
        *,
        step: int,
        modules: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        extra: dict[str, torch.Tensor] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.step = step
        self.modules = modules
        self.optimizers = optimizers
        self.extra = extra or {}
        self.info = info or {}


def state_to_tensors(state: TrainState, config_toml: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    for name, module in state.modules.items():
        for key, value in module.state_dict().items():
            tensors[f"model/{name}/{key}"] = value.detach().cpu().contiguous()
    optim_meta: dict[str, Any] = {}
    for name, opt in state.optimizers.items():
        t, m = flatten_optimizer(name, opt)
        tensors.update(t)
        optim_meta[name] = m
    for key, value in state.extra.items():
        tensors[f"extra/{key}"] = value.detach().cpu().contiguous()
    rng_t, rng_m = rng_state()
    tensors.update(rng_t)
    metadata = {
        "format": FORMAT,
        "step": str(state.step),
        "config": config_toml,
        "optimizers": json.dumps(optim_meta),
        "rng": json.dumps(rng_m),
        "info": json.dumps(state.info),
    }
    return tensors, metadata


def save_checkpoint(path: Path, state: TrainState, config_toml: str) -> Path:
    """Write ``path`` atomically: temp file in the same folder, fsync, rename, fsync the folder."""
    tensors, metadata = state_to_tensors(state, config_toml)
    # Shared storage (e.g. tied weights) is not allowed by safetensors: store private copies.
    seen: set[int] = set()
    for key, value in tensors.items():
        ptr = value.untyped_storage().data_ptr() if value.numel() else -1
        if ptr in seen:
            tensors[key] = value.clone()
        seen.add(ptr)
    blob = st_save(tensors, metadata=metadata)
    safefile.write_atomic(path, blob, before_rename=before_rename)
    return path


# ---------------------------------------------------------------- reading


class Checkpoint:
    """A checkpoint read back from disk (tensors on CPU plus decoded metadata)."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        self.path = path
        self.tensors = tensors
        self.metadata = metadata
        self.step = int(metadata["step"])
        self.config_toml = metadata["config"]
        self.info: dict[str, Any] = json.loads(metadata.get("info", "{}"))

    def module_state(self, name: str) -> dict[str, torch.Tensor]:
        prefix = f"model/{name}/"
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def extra(self) -> dict[str, torch.Tensor]:
        return {k[len("extra/") :]: v for k, v in self.tensors.items() if k.startswith("extra/")}

    def restore(self, state: TrainState, *, rng: bool = True) -> None:
        """Load modules, optimizers and RNGs into ``state``; shape mismatches become ``BadInput``."""
        where = str(self.path)
        for name, module in state.modules.items():
            saved = self.module_state(name)
            current = module.state_dict()
            missing = sorted(set(current) - set(saved))
            unexpected = sorted(set(saved) - set(current))
            if missing or unexpected:
                key = (missing or unexpected)[0]
                what = "missing" if missing else "unexpected"
                raise BadInput(f"{what} tensor (checkpoint does not fit the config)", where=where, field=f"{name}.{key}")
            for key, value in saved.items():
                if value.shape != current[key].shape or value.dtype != current[key].dtype:
                    raise BadInput(
                        f"tensor {tuple(value.shape)} {value.dtype} does not fit the model's "
                        f"{tuple(current[key].shape)} {current[key].dtype}",
                        where=where,
                        field=f"{name}.{key}",
                    )
            module.load_state_dict(saved)
        optim_meta = json.loads(self.metadata["optimizers"])
        for name, opt in state.optimizers.items():
            if name not in optim_meta:
                raise BadInput("optimizer missing from checkpoint", where=where, field=name)
            try:
                opt.load_state_dict(unflatten_optimizer(name, self.tensors, optim_meta[name]))
            except (ValueError, KeyError, RuntimeError) as exc:
                raise BadInput(f"optimizer state does not fit: {exc}", where=where, field=name) from None
        state.extra = self.extra()
        state.info = self.info
        state.step = self.step
        if rng:
            set_rng_state(self.tensors, json.loads(self.metadata["rng"]))


def load_checkpoint(path: Path) -> Checkpoint:
    tensors, metadata = safefile.read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise BadInput(f"not an atesc checkpoint (format {metadata.get('format')!r})", where=str(path))
    for key in ("step", "config", "optimizers", "rng"):
        if key not in metadata:
            raise BadInput("checkpoint metadata incomplete", where=str(path), field=key)
    try:
        return Checkpoint(path, tensors, metadata)
    except (ValueError, json.JSONDecodeError) as exc:
        raise BadInput(f"checkpoint metadata corrupt: {exc}", where=str(path)) from None


# ---------------------------------------------------------------- run-directory helpers


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.safetensors"


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    return sorted(ckpt_dir.glob("step-*.safetensors"))


def save_in_dir(ckpt_dir: Path, state: TrainState, config_toml: str, keep: int) -> Path:
    """Save a step checkpoint, point ``latest`` at it, and keep only the newest ``keep`` files."""
    # Temp files of a writer that was killed mid-save: the run lock makes this process the only
    # writer, so any temp file that is not ours is garbage (a whole checkpoint's worth of disk).
    mine = f".tmp-{os.getpid()}"
    for stale in ckpt_dir.glob(".*.tmp-*"):
        if not stale.name.endswith(mine):
            stale.unlink(missing_ok=True)
    path = save_checkpoint(ckpt_dir / checkpoint_name(state.step), state, config_toml)
    safefile.write_atomic(ckpt_dir / LATEST, path.name.encode())
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint that exists: the ``latest`` pointer, else the highest step file."""
    pointer = ckpt_dir / LATEST
    try:
        name = pointer.read_text().strip()
        if name and (ckpt_dir / name).is_file() and "/" not in name:
            return ckpt_dir / name
    except (OSError, UnicodeDecodeError):
        pass
    files = list_checkpoints(ckpt_dir)
    return files[-1] if files else None


def load_latest_valid(ckpt_dir: Path) -> Checkpoint:
    """Newest checkpoint that loads; older ones are tried if the newest is corrupt."""
    candidates = list_checkpoints(ckpt_dir)
    newest = latest_checkpoint(ckpt_dir)
    if newest is not None and newest in candidates:
        candidates.remove(newest)
        candidates.append(newest)
    if not candidates:
        raise BadInput("no checkpoint to resume from", where=str(ckpt_dir.parent))
    first_error: BadInput | None = None
    for path in reversed(candidates):
        try:
            return load_checkpoint(path)
        except BadInput as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error
