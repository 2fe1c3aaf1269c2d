"""Small shared evaluation helpers: accuracy, batched predictions, device resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from core.errors import BadInput


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> CUDA when available else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "cuda" and not torch.cuda.is_available():
        raise BadInput("CUDA requested but not available", field="run.device")
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int = 512, device: str | torch.device | None = None
) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (on CPU), in eval mode; the model's train/eval mode is restored."""
    dev = model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i : i + batch_size].to(dev, non_blocking=True)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs)


def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``(x, y)``; 0.0 for an empty set."""
    if len(x) == 0:
        return 0.0
    pred = predict_logits(model, x, batch_size=batch_size, device=device).argmax(1)
    return (pred == y.cpu()).float().mean().item()


def evaluate_on_domains(
    domains: list[str],
    *,
    teacher_file: Path | None = None,
    run_dir: Path | None = None,
    root: Path | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Test accuracy of a saved teacher, or of a run's latest student, on each named domain."""
    from core.config import load_config
    from core.data import load_domain

    if (teacher_file is None) == (run_dir is None):
        raise BadInput("give exactly one of a teacher file or a run directory")
    cfg = load_config(None, [])
    if teacher_file is not None:
        from core.teacher_io import load_teacher

        model, _ = load_teacher(teacher_file)
        label = f"teacher {teacher_file.name}"
    else:
        from core.checkpoint import load_latest_valid
        from core.models import create_model
        from core.rundir import CHECKPOINT_DIR
        from core.train import prepare_resume

        cfg = prepare_resume(run_dir)
        saved = load_latest_valid(run_dir / CHECKPOINT_DIR)
        model = create_model(cfg.student.arch, width=cfg.student.width)
        model.load_state_dict(saved.module_state("student"))
        label = f"student @ step {saved.step}"
    data_root = (root or cfg.data.root).expanduser()
    rows = []
    for name in domains:
        data = load_domain(name, data_root, seed=seed)
        rows.append({"model": label, "domain": name, "accuracy": accuracy(model, data.test_x, data.test_y, device="cpu"),
                     "samples": len(data.test_y)})
    return rows
