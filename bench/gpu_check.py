"""CUDA path check: the real trainer on a GPU with AMP (bf16 + channels_last) on and off.

Usage (on a CUDA machine): python bench/gpu_check.py [--iterations 40] [--out bench/gpu_check.md]
Both settings run in the same process on the same card, so their ratio is meaningful; the
absolute numbers belong to the card named in the output.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.config import load_config
from core.train import Trainer

SETTINGS = {
    # A paper-scale shape (VGG teacher, ResNet-18 student, wide generator, big batch) on the offline pair.
    "vgg11 -> resnet18, batch 256": ["teacher.arch=vgg11", "teacher.width=64", "student.arch=resnet18",
                                     "student.width=64", "generator.width=64", "dfkd.batch_size=256"],
}


def run(overrides: list[str], amp: bool, iterations: int, root: Path, device: str) -> dict[str, float]:
    cfg = load_config(None, [*overrides, f"run.amp={str(amp).lower()}", f"run.device={device}",
                             f"dfkd.iterations={iterations}", f"run.eval_every={iterations}",
                             f"run.checkpoint_every={iterations}", "teacher.epochs=3", f"data.root={root}"])
    events: list = []
    t0 = time.perf_counter()
    result = Trainer(cfg, Path(tempfile.mkdtemp()) / "run", sinks=[events.append]).run()
    wall = time.perf_counter() - t0
    rates = [e.samples_per_s for e in events if e.kind == "train"][min(5, iterations - 1):]  # skip warm-up
    evals = [e for e in events if e.kind == "eval"]
    return {"samples_per_s": statistics.median(rates), "wall_s": wall, "acc_id": result.student_acc_id or 0.0,
            "teacher_acc_id": evals[0].teacher_acc_id or 0.0, "teacher_acc_ood": evals[0].teacher_acc_ood or 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("gpu_check.md"))
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test this script")
    args = parser.parse_args()
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    root = Path(tempfile.mkdtemp())
    lines = [f"# GPU check on {card}", "", f"`python bench/gpu_check.py --iterations {args.iterations}` "
             f"(torch {torch.__version__}; the teacher is trained once, on the GPU, then cached)", "",
             "| setting | AMP | samples/s (median) | wall s | teacher ID/OOD | student ID |", "|---|---|---|---|---|---|"]
    for name, overrides in SETTINGS.items():
        res = {amp: run(overrides, amp, args.iterations, root, args.device) for amp in (False, True)}
        for amp, r in res.items():
            lines.append(f"| {name} | {'bf16' if amp else 'off'} | {r['samples_per_s']:.0f} | {r['wall_s']:.1f} | "
                         f"{r['teacher_acc_id']:.3f}/{r['teacher_acc_ood']:.3f} | {r['acc_id']:.3f} |")
        lines.append(f"| {name} | ratio bf16/off | {res[True]['samples_per_s'] / res[False]['samples_per_s']:.2f} | | | |")
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
