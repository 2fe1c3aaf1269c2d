"""What CMI's reference knobs cost on this CPU, side by side with DFQ in one process.

On the quickstart pair with its SL teacher (trained and cached on first use):
1. seconds per DFQ generator step vs one CMI inversion step (``g_steps = 1``), with the bank full and
   ``n_neg`` 0 / 256 / 4096 (the reference's 4096), interleaved round by round;
2. what more inversion steps buy: for ``g_steps`` in 1 .. 200 (the reference's 200), the best
   batch's loss terms and the share of samples the teacher assigns to their sampled target class.

Usage: python bench/cmi_cost.py [--rounds 5] [--threads 1] [--max-g-steps 200]
Writes bench/cmi_cost.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import load_config  # noqa: E402
from core.dfkd import create_synthesizer  # noqa: E402
from core.models import create_generator, create_model  # noqa: E402
from core.presets import resolve_preset  # noqa: E402
from core.teachers.train import get_teacher  # noqa: E402

G_STEPS = (1, 5, 10, 20, 50, 200)


def build(method: str, teacher: torch.nn.Module, **cmi: object):  # noqa: ANN201
    overrides = ["teacher.kind='sl'", f"dfkd.method='{method}'", "run.device='cpu'"]
    overrides += [f"dfkd.cmi_{k}={v!r}" for k, v in cmi.items()]  # ints and strings: repr is TOML
    cfg = load_config(resolve_preset("quickstart"), overrides)
    torch.manual_seed(0)
    student = create_model(cfg.student.arch, num_classes=10, width=cfg.student.width)
    generator = create_generator(cfg.generator.arch, nz=cfg.generator.nz, width=cfg.generator.width)
    synth = create_synthesizer(method, teacher, generator, cfg, torch.device("cpu"))
    return synth, student, cfg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-g-steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    cfg0 = load_config(resolve_preset("quickstart"), ["teacher.kind='sl'", "run.device='cpu'"])
    teacher = get_teacher(cfg0).model.eval()

    # 1. cost of one step
    cells = {"DFQ generator step": build("dfq", teacher)}
    for n_neg in (0, 256, 4096):
        synth, student, _ = build("cmi", teacher, g_steps=1, n_neg=n_neg, bank_size=4096)
        synth.bank.add(torch.randn(4096, synth.bank.dim))
        cells[f"CMI inversion step, n_neg {n_neg}"] = (synth, student, None)
    times: dict[str, list[float]] = {k: [] for k in cells}
    for name, (synth, student, _) in cells.items():  # warm-up
        synth.generator_step(student)
    for _ in range(args.rounds):
        for name, (synth, student, _) in cells.items():
            t0 = time.perf_counter()
            synth.generator_step(student)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["DFQ generator step"]

    # 2. what g_steps buys (one batch each, same seed)
    quality = []
    for g in (g for g in G_STEPS if g <= args.max_g_steps):
        synth, student, cfg = build("cmi", teacher, g_steps=g, targets="balanced")
        torch.manual_seed(1)
        t0 = time.perf_counter()
        step = synth.generator_step(student)
        seconds = time.perf_counter() - t0
        torch.manual_seed(1)
        targets = synth._new_batch()  # the step's own draws, replayed
        with torch.no_grad():
            hit = float((teacher(step.x).argmax(1) == targets).float().mean())
        quality.append((g, step.parts, hit, seconds))

    load_after = os.getloadavg()
    lines = [
        "# CMI cost on the CPU (quickstart pair, SL teacher)",
        "",
        f"`python bench/cmi_cost.py --rounds {args.rounds} --threads {args.threads} --max-g-steps {args.max_g_steps}`",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s); load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        "(a shared 2-core machine: absolute times are noisy, ratios less so). Batch 32, generator dcgan width 16, "
        "teacher `cnn` width 32 (BN features 2 x 352 per bank row).",
        "",
        f"## One step (median of {args.rounds} interleaved rounds)",
        "",
        "| step | median s | ratio to a DFQ generator step |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} | {v / base:.2f} |" for k, v in med.items()]
    lines += [
        "",
        "## One batch after g_steps inversion steps (balanced targets, same seed)",
        "",
        "| g_steps | best loss: bn | oh | adv | cr | teacher predicts the target | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for g, parts, hit, seconds in quality:
        lines.append(f"| {g} | {parts['bn']:.1f} | {parts['oh']:.3f} | {parts['adv']:.3f} | {parts['cr']:.3f} | "
                     f"{hit:.2f} | {seconds:.1f} |")
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
