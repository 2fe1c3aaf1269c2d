"""How a plain supervised (SL) CNN trained on `mnist` transfers to each offline domain.

Run:  python bench/data_transfer.py [--seeds 0 1 2] [--epochs 8] [--root data]
Writes bench/data_transfer.md. One CPU thread (the machine is shared). The model is local on
purpose: this measures the data domains, not the shared model zoo.

Columns: raw inputs, and the same test images turned grey and min-max normalised per image
(the DESIGN notes show that normalisation decides whether colour domains transfer at all).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.data import load_domain  # noqa: E402

OOD = ["uci-digits", "mnist-color", "syn-digits", "patched:mnist"]


def cnn(width: int = 32) -> nn.Module:
    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, width), block(width, width), block(width, width), nn.Flatten(), nn.Linear(width * 16, 10))


def grey_minmax(x: torch.Tensor) -> torch.Tensor:
    g = x.mean(1, keepdim=True)
    lo, hi = g.amin((2, 3), keepdim=True), g.amax((2, 3), keepdim=True)
    return ((g - lo) / (hi - lo).clamp_min(1e-6)).repeat(1, 3, 1, 1)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(xb).argmax(1) for xb in x.split(500)])
    return (pred == y).float().mean().item()


def train(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int) -> nn.Module:
    torch.manual_seed(seed)
    model = cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "atesc-data"))
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    args = ap.parse_args()
    torch.set_num_threads(1)

    # Load timing on a fresh cache dir for mnist (first build vs cached).
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        load_domain("mnist", tmp)
        t_first = time.perf_counter() - t
        t = time.perf_counter()
        load_domain("mnist", tmp)
        t_cached = time.perf_counter() - t

    domains = {n: load_domain(n, args.root) for n in ["mnist", *OOD]}
    src = domains["mnist"]
    raw: dict[str, list[float]] = {n: [] for n in domains}
    grey: dict[str, list[float]] = {n: [] for n in domains}
    secs = []
    for seed in args.seeds:
        t = time.perf_counter()
        model = train(src.train_x, src.train_y, seed, args.epochs)
        secs.append(time.perf_counter() - t)
        for n, d in domains.items():
            raw[n].append(accuracy(model, d.test_x, d.test_y))
            grey[n].append(accuracy(model, grey_minmax(d.test_x), d.test_y))
        print(f"seed {seed}: " + "  ".join(f"{n} {raw[n][-1]:.3f}" for n in domains), f"({secs[-1]:.0f} s)", flush=True)

    def fmt(v: list[float]) -> str:
        sd = statistics.pstdev(v) if len(v) > 1 else 0.0
        return f"{statistics.mean(v):.3f} ± {sd:.3f} ({', '.join(f'{a:.2f}' for a in v)})"

    lines = [
        "# SL transfer from `mnist` to the offline domains",
        "",
        f"Command: `python bench/data_transfer.py --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs}`  ",
        f"Model: 3 conv blocks (width 32, BatchNorm, max-pool) + linear; Adam 1e-3, batch 64, {args.epochs} epochs "
        f"on mnist train ({len(src.train_x)} images), 1 CPU thread, {statistics.mean(secs):.0f} s per model.  ",
        f"Test accuracy, mean ± sd over seeds {args.seeds} (per-seed values in brackets).  ",
        f"`load_domain('mnist')` on a fresh root: first build {t_first:.2f} s, cached {t_cached:.3f} s.",
        "",
        "| domain | test images | raw input | grey + min-max per image |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {len(d.test_x)} | {fmt(raw[n])} | {fmt(grey[n])} |" for n, d in domains.items()]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
