"""safetensors checkpoints: identical state after a round trip, atomic writes, one-line errors."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.rundir import checkpoint as ckpt
from core.errors import BadInput


def _state(seed: int, step: int = 3) -> ckpt.TrainState:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(2, 3, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        model(torch.rand(4, 3, 8, 8)).sum().backward()
        opt.step()
    return ckpt.TrainState(step=step, modules={"m": model}, optimizers={"m": opt},
                           extra={"bank": torch.arange(6.0)}, info={"rollbacks": 1})


def test_round_trip_restores_modules_optimizers_rng(tmp_path: Path) -> None:
    src = _state(0)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = ckpt.save_checkpoint(tmp_path / "c.safetensors", src, "x = 1\n")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    dst = _state(1, step=0)
    loaded = ckpt.load_checkpoint(path)
    loaded.restore(dst)
    assert dst.step == 3 and dst.info == {"rollbacks": 1}
    assert torch.equal(dst.extra["bank"], torch.arange(6.0))
    for (k, a), (_, b) in zip(src.modules["m"].state_dict().items(), dst.modules["m"].state_dict().items()):
        assert torch.equal(a, b), k
    sa, sb = src.optimizers["m"].state_dict(), dst.optimizers["m"].state_dict()
    for pid in sa["state"]:
        for key in sa["state"][pid]:
            assert torch.equal(torch.as_tensor(sa["state"][pid][key]), torch.as_tensor(sb["state"][pid][key]))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert loaded.config_toml == "x = 1\n"


def test_interrupted_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.safetensors"
    ckpt.save_checkpoint(path, _state(0, step=1), "")
    before = path.read_bytes()

    def boom(_tmp: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "before_rename", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(path, _state(0, step=2), "")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left behind


def test_keep_last_k_and_latest_pointer(tmp_path: Path) -> None:
    for step in range(1, 6):
        ckpt.save_in_dir(tmp_path, _state(0, step=step), "", keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [ckpt.checkpoint_name(4), ckpt.checkpoint_name(5)]
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / ckpt.checkpoint_name(5)
    # A corrupt newest file falls back to the previous valid one.
    (tmp_path / ckpt.checkpoint_name(5)).write_bytes(b"\x00" * 3)
    assert ckpt.load_latest_valid(tmp_path).step == 4


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "truncated"),
        (b"\x01\x02", "truncated"),
        (struct.pack("<Q", 1 << 60) + b"{}", "header length"),
        (struct.pack("<Q", 4) + b"nope", "header is not JSON"),
        (b"\x80\x04\x95" + b"\x00" * 16, "pickle"),
    ],
)
def test_corrupt_files_are_one_line_errors(tmp_path: Path, payload: bytes, match: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(payload)
    with pytest.raises(BadInput, match=match) as info:
        ckpt.load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_real_checkpoint(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint(tmp_path / "c.safetensors", _state(0), "")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput):
        ckpt.load_checkpoint(path)


def test_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint(tmp_path / "c.safetensors", _state(0), "")
    other = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.Flatten(), nn.Linear(5 * 36, 2))
    dst = ckpt.TrainState(step=0, modules={"m": other}, optimizers={})
    with pytest.raises(BadInput, match="does not fit") as info:
        ckpt.load_checkpoint(path).restore(dst)
    name = info.value.field.removeprefix("m.")
    saved = ckpt.load_checkpoint(path).module_state("m")
    assert saved[name].shape != other.state_dict()[name].shape


def test_no_checkpoint_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no checkpoint"):
        ckpt.load_latest_valid(tmp_path)
