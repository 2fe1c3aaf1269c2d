"""CUDA path check: the real trainer on a GPU, base and ATEsc steps, AMP (bf16 + channels_last) on
and off, cuDNN autotuning off and on.

Usage (on a CUDA machine): python bench/gpu_check.py [--iterations 40] [--out bench/gpu_check.md]
Every setting runs in the same process on the same card, so their ratios are meaningful; the
absolute numbers (samples/s, peak memory) belong to the card named in the output. Without CUDA it
prints that it was skipped and exits 0 (``--device cpu`` smoke-tests the script itself).
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


def run(overrides: list[str], amp: bool, atesc: bool, autotune: bool, iterations: int, root: Path,
        device: str) -> dict[str, float]:
    torch.backends.cudnn.benchmark = autotune
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cfg = load_config(None, [*overrides, f"run.amp={str(amp).lower()}", f"run.device={device}",
                             f"atesc.enabled={str(atesc).lower()}",
                             f"dfkd.iterations={iterations}", f"run.eval_every={iterations}",
                             f"run.checkpoint_every={iterations}", "teacher.epochs=3", f"data.root={root}"])
    events: list = []
    t0 = time.perf_counter()
    result = Trainer(cfg, Path(tempfile.mkdtemp()) / "run", sinks=[events.append]).run()
    wall = time.perf_counter() - t0
    rates = [e.samples_per_s for e in events if e.kind == "train"][min(5, iterations - 1):]  # skip warm-up
    evals = [e for e in events if e.kind == "eval"]
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"samples_per_s": statistics.median(rates), "wall_s": wall, "acc_id": result.student_acc_id or 0.0,
            "memory_gib": memory,
            "teacher_acc_id": evals[0].teacher_acc_id or 0.0, "teacher_acc_ood": evals[0].teacher_acc_ood or 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("gpu_check.md"))
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test this script")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: skipped, no CUDA device (nothing measured)")
        return
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    root = Path(tempfile.mkdtemp())
    lines = [f"# GPU check on {card}", "", f"`python bench/gpu_check.py --iterations {args.iterations}` "
             f"(torch {torch.__version__}; the teacher is trained once, on the GPU, then cached)", "",
             "| setting | ATEsc | AMP | cuDNN autotune | samples/s (median) | peak GiB | wall s | teacher ID/OOD "
             "| student ID |", "|---|---|---|---|---|---|---|---|---|"]
    for name, overrides in SETTINGS.items():
        res = {(atesc, amp, tune): run(overrides, amp, atesc, tune, args.iterations, root, args.device)
               for atesc in (False, True) for amp in (False, True) for tune in (False, True)}
        for (atesc, amp, tune), r in res.items():
            lines.append(f"| {name} | {'on' if atesc else 'off'} | {'bf16' if amp else 'off'} | {'on' if tune else 'off'} "
                         f"| {r['samples_per_s']:.0f} | {r['memory_gib']:.2f} | {r['wall_s']:.1f} | "
                         f"{r['teacher_acc_id']:.3f}/{r['teacher_acc_ood']:.3f} | {r['acc_id']:.3f} |")
        sps = {k: r["samples_per_s"] for k, r in res.items()}
        lines += ["", f"{name}: bf16/off {sps[(False, True, False)] / sps[(False, False, False)]:.2f} (base), "
                  f"{sps[(True, True, False)] / sps[(True, False, False)]:.2f} (ATEsc); autotune on/off "
                  f"{sps[(False, True, True)] / sps[(False, True, False)]:.2f} (base, bf16); ATEsc step / base step "
                  f"{sps[(False, True, False)] / sps[(True, True, False)]:.2f} (bf16), "
                  f"{sps[(False, False, False)] / sps[(True, False, False)]:.2f} (fp32)", ""]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
