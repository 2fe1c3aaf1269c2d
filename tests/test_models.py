"""Model registry, uniform classifier surface, generator, teacher files (save/load/refuse)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from core.config import Config
from core.errors import BadInput
from core.eval import accuracy
from core.models import GENERATORS, MODELS, bn_layers, create_generator, create_model
from core.rundir.safefile import read_safetensors_header
from core.teachers.files import load_teacher, save_teacher

torch.set_num_threads(1)

SMALL = {"cnn": 4, "cnn-student": 4, "vgg11": 4, "vgg13": 4, "resnet18": 4, "resnet34": 4}


def test_registry_lists_every_model():
    assert set(SMALL) <= set(MODELS.names())
    assert "dcgan" in GENERATORS


def test_unknown_model_is_bad_input_listing_known_names():
    with pytest.raises(BadInput) as info:
        create_model("alexnet", width=8, field="teacher.arch")
    msg = str(info.value)
    assert "alexnet" in msg and "teacher.arch" in msg and "resnet18" in msg and "\n" not in msg
    with pytest.raises(BadInput, match="unknown generator"):
        create_generator("stylegan", nz=8, width=4)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_classifier_surface(name: str):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, width=SMALL[name]).eval()
    x = torch.rand(3, 3, 32, 32)
    logits = model(x)
    feats = model.features(x)
    assert logits.shape == (3, 7)
    assert feats.shape == (3, model.feature_dim)
    assert torch.allclose(model.head(feats), logits, atol=1e-6)
    assert isinstance(model.blocks, torch.nn.ModuleList) and len(model.blocks) >= 3
    assert bn_layers(model), "DFQ needs BatchNorm layers"
    # hooks on blocks see the whole forward pass, in order
    seen: list[int] = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: seen.append(k)) for k, b in enumerate(model.blocks)]
    model(x)
    for h in handles:
        h.remove()
    assert seen == list(range(len(model.blocks)))
    # normalisation constants are not part of the weights
    assert not any("pixel" in k for k in model.state_dict())


def test_in_ch_and_width_scale():
    m = create_model("cnn", num_classes=10, width=8, in_ch=1)
    assert m(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    small = sum(p.numel() for p in create_model("cnn", width=8).parameters())
    big = sum(p.numel() for p in create_model("cnn", width=16).parameters())
    assert big > 3 * small


def test_generator_outputs_images_in_unit_range():
    torch.manual_seed(0)
    g = create_generator("dcgan", nz=16, width=8)
    z = torch.randn(5, 16) * 10
    with torch.no_grad():
        x = g(z)
    assert x.shape == (5, 3, 32, 32)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert create_generator("dcgan", nz=16, width=8, img_size=64, out_ch=1)(torch.randn(2, 16)).detach().shape == (2, 1, 64, 64)


def test_accuracy_helpers_restore_mode():
    model = create_model("cnn", width=4).train()
    x, y = torch.rand(20, 3, 32, 32), torch.randint(0, 10, (20,))
    acc = accuracy(model, x, y, batch_size=7)
    assert 0.0 <= acc <= 1.0 and model.training
    assert accuracy(model, x[:0], y[:0]) == 0.0


# ---------------------------------------------------------------------------------------------
# teacher files


def _cfg() -> Config:
    cfg = Config()
    cfg.teacher.width = 4
    return cfg


def test_save_load_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    cfg = _cfg()
    model = create_model("cnn", width=4).train()
    model(torch.rand(8, 3, 32, 32))  # move BN running stats off their init
    model.eval()
    path = save_teacher(tmp_path / "t.safetensors", model, cfg, 0.97, 0.08)
    loaded, meta = load_teacher(path)
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert meta["arch"] == "cnn" and meta["width"] == "4" and meta["kind"] == "ntl-target"
    assert float(meta["teacher_acc_id"]) == pytest.approx(0.97)
    assert float(meta["teacher_acc_ood"]) == pytest.approx(0.08)
    assert "[teacher]" in meta["config"]
    assert not list(tmp_path.glob("*.tmp"))


def test_load_refuses_pickle_checkpoints(tmp_path: Path):
    for name in ("t.pt", "t.pth"):
        p = tmp_path / name
        p.write_bytes(b"\x80\x02}q\x00.")
        with pytest.raises(BadInput, match="atesc convert --trust"):
            load_teacher(p)
    zipped = tmp_path / "disguised.safetensors"
    zipped.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(BadInput, match="atesc convert --trust"):
        load_teacher(zipped)


def test_load_refuses_truncated_and_garbage(tmp_path: Path):
    cfg = _cfg()
    good = save_teacher(tmp_path / "good.safetensors", create_model("cnn", width=4).eval(), cfg, 0.5, 0.5)
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(BadInput, match="truncated") as info:
        load_teacher(cut)
    assert "cut.safetensors" in str(info.value)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(BadInput, match="truncated"):
        load_teacher(tiny)
    absurd = tmp_path / "absurd.safetensors"
    absurd.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(BadInput, match="header length"):
        load_teacher(absurd)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\x00" * 10)
    with pytest.raises(BadInput, match="not JSON"):
        load_teacher(garbage)
    with pytest.raises(BadInput, match="not found"):
        load_teacher(tmp_path / "missing.safetensors")


def test_load_names_wrongly_shaped_tensor(tmp_path: Path):
    from safetensors.torch import save_file

    cfg = _cfg()
    path = save_teacher(tmp_path / "t.safetensors", create_model("cnn", width=4).eval(), cfg, 0.5, 0.5)
    header = read_safetensors_header(path)
    meta = dict(header["__metadata__"])
    meta["width"] = "8"  # metadata now disagrees with the stored tensors
    from safetensors.torch import load_file

    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(BadInput) as info:
        load_teacher(path)
    msg = str(info.value)
    assert "t.safetensors" in msg and "blocks.0.0.weight" in msg and "shape" in msg


def test_load_without_metadata_uses_given_arch(tmp_path: Path):
    from safetensors.torch import save_file

    model = create_model("cnn-student", width=4).eval()
    p = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(p))
    with pytest.raises(BadInput, match="arch"):
        load_teacher(p)
    loaded, _ = load_teacher(p, arch="cnn-student", width=4)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(BadInput, match="missing tensor|shape"):
        load_teacher(p, arch="cnn", width=4)


def test_header_tensor_range_beyond_file(tmp_path: Path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    p = tmp_path / "short.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)
    with pytest.raises(BadInput, match="truncated") as info:
        read_safetensors_header(p)
    assert ": w:" in str(info.value)
