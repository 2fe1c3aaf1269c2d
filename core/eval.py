"""Small shared evaluation helpers: accuracy, batched predictions, device resolution.

Low level on purpose (torch only): the trainer and the teachers import it. Whole commands that
evaluate saved models live in ``core.experiments.evaluate``."""

from __future__ import annotations

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
