"""The GPU path's pieces that a CPU can check: the fp16 gradient-scaler branch of the student and
generator updates, and the settings a paper-scale CUDA run uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.train import Trainer


def _run(preset: Path, run_dir: Path, scaled: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    build = Trainer._build

    def with_scalers(self: Trainer) -> None:
        build(self)
        if scaled:  # what run.amp_dtype=fp16 installs on CUDA, here on CPU
            self.scaler = torch.amp.GradScaler("cpu")
            self.synth.scaler = torch.amp.GradScaler("cpu")

    monkeypatch.setattr(Trainer, "_build", with_scalers)
    trainer = Trainer(load_config(preset, ["dfkd.iterations=3"]), run_dir)
    trainer.run()
    return {**{f"s.{k}": v.clone() for k, v in trainer.student.state_dict().items()},
            **{f"g.{k}": v.clone() for k, v in trainer.synth.generator.state_dict().items()}}  # fmt: skip


def test_grad_scaler_branch_matches_the_plain_update(tiny_preset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loss scaling by a power of two is exact in fp32, so with no overflow the scaled updates must
    equal the plain ones bit for bit: the branch scales, unscales and steps every optimizer once."""
    plain = _run(tiny_preset, tmp_path / "plain", False, monkeypatch)
    scaled = _run(tiny_preset, tmp_path / "scaled", True, monkeypatch)
    assert plain.keys() == scaled.keys()
    changed = [k for k in plain if plain[k].is_floating_point()]
    assert changed and all(torch.equal(plain[k], scaled[k]) for k in plain)


def test_paper_preset_cuda_settings() -> None:
    from core.presets import resolve_preset

    cfg = load_config(resolve_preset("paper/cifar-stl"))
    assert (cfg.run.amp, cfg.run.amp_dtype, cfg.run.cudnn_benchmark) == (True, "bf16", True)
    assert (cfg.teacher.arch, cfg.student.arch, cfg.data.id_domain, cfg.data.ood_domain) == ("vgg13", "resnet18", "cifar9", "stl9")
