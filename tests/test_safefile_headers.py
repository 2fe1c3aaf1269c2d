"""The safetensors format is decided by parsing, never by a leading byte (issue: quickstart
checkpoints whose header length ends in 0x80 were refused as pickles)."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from core.rundir import checkpoint as ckpt
from core.errors import BadInput
from core.rundir.safefile import read_safetensors, read_safetensors_header
from core.teachers.files import load_teacher, save_teacher
from tests.test_checkpoint import _state


def with_header_length_low_byte(blob: bytes, low: int) -> bytes:
    """Re-frame a safetensors blob so its header length is ``low`` modulo 256 (metadata padding;
    the writer's 8-byte alignment is a convention, readers accept any length)."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    data = blob[8 + n :]
    meta = header.setdefault("__metadata__", {})
    for pad in range(512):
        meta["pad"] = "x" * pad
        raw = json.dumps(header).encode()
        if len(raw) % 256 == low:
            return struct.pack("<Q", len(raw)) + raw + data
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def checkpoint_blob(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = ckpt.save_checkpoint(tmp_path_factory.mktemp("c") / "c.safetensors", _state(0), "x = 1\n")
    return path.read_bytes()


@pytest.mark.parametrize("low", range(256))
def test_checkpoint_loads_whatever_the_header_length_low_byte(low: int, checkpoint_blob: bytes, tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    path.write_bytes(with_header_length_low_byte(checkpoint_blob, low))
    assert path.read_bytes()[0] == low
    loaded = ckpt.load_checkpoint(path)
    dst = _state(1, step=0)
    loaded.restore(dst, rng=False)
    assert dst.step == 3 and torch.equal(dst.extra["bank"], torch.arange(6.0))
    assert loaded.config_toml == "x = 1\n"


def test_teacher_loads_whatever_the_header_length_low_byte(tmp_path: Path) -> None:
    from core.config import Config
    from core.models import create_model

    cfg = Config()
    model = create_model(cfg.teacher.arch, num_classes=10, width=4)
    cfg.teacher.width = 4
    blob = save_teacher(tmp_path / "t.safetensors", model, cfg, 0.9, 0.1).read_bytes()
    for low in range(256):
        path = tmp_path / f"t{low}.safetensors"
        path.write_bytes(with_header_length_low_byte(blob, low))
        loaded, meta = load_teacher(path)
        assert meta["teacher_acc_id"] == "0.900000", low
        for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(a, b), (low, k)


def test_writer_output_with_0x80_first_byte_round_trips(tmp_path: Path) -> None:
    """The exact failure seen: the official writer's own file with header length 0x..80."""
    for pad in range(0, 2048, 8):
        blob = save({"w": torch.ones(3)}, metadata={"pad": "y" * pad})
        if blob[0] == 0x80:
            break
    path = tmp_path / "w.safetensors"
    path.write_bytes(blob)
    tensors, meta = read_safetensors(path)
    assert torch.equal(tensors["w"], torch.ones(3)) and meta["pad"].startswith("y")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_real_pickles_are_refused_with_the_hint(protocol: int, tmp_path: Path) -> None:
    path = tmp_path / "p.safetensors"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))
    with pytest.raises(BadInput, match="pickle files are never loaded"):
        read_safetensors_header(path)


@pytest.mark.parametrize("zipfile", [True, False])
def test_torch_save_files_are_refused_with_the_hint(zipfile: bool, tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(BadInput, match="pickle"):
        ckpt.load_checkpoint(path)
    with pytest.raises(BadInput, match="convert"):
        load_teacher(path)


def test_non_pickle_garbage_gets_the_framing_error_not_the_hint(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    path.write_bytes(b"\x80\x00" + b"\x00" * 30)  # 0x80 first byte, no pickle protocol: a bad length
    with pytest.raises(BadInput, match="header length") as exc:
        read_safetensors_header(path)
    assert "never loaded" not in str(exc.value)
