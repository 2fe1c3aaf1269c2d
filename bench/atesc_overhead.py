"""Cost of ATEsc per outer iteration, side by side with plain DFQ in one run.

One outer iteration = ``generator_step`` + ``student_steps`` (5) student updates on its batch.
- base: plain DFQ (teacher logits once per batch, KD on all samples);
- ATEsc: the same plus ``ATEsc.analyze`` once per generated batch (attack, score, split) and
  ``student_loss`` (KD on fragile + forgetting on robust) for each student step.
Optionally ATEsc with generator steering (one-step attack inside the generator loss).

Usage: python bench/atesc_overhead.py [--rounds 8] [--per-round 3] [--threads 1]
Writes bench/atesc_overhead.md. Target: ATEsc/base <= 1.3 (median per-iteration time).
Configurations are interleaved round by round so machine noise hits each alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.atesc import ATEsc  # noqa: E402
from core.config import Config  # noqa: E402
from core.dfkd import create_synthesizer  # noqa: E402
from core.losses import kd_loss  # noqa: E402
from core.models import create_generator, create_model  # noqa: E402

BATCH = 64
STUDENT_STEPS = 5


def make_cell(atesc: dict | None, seed: int = 0) -> Callable[[], None]:
    """Build fresh models for one configuration and return a function running one iteration."""
    overrides: dict = {
        "generator": {"width": 16, "nz": 64},
        "teacher": {"arch": "cnn", "width": 32},
        "student": {"width": 16},
        "dfkd": {"method": "dfq", "batch_size": BATCH, "student_steps": STUDENT_STEPS},
        "atesc": {"enabled": atesc is not None, **(atesc or {})},
    }
    cfg = Config(**overrides)
    torch.manual_seed(seed)
    teacher = create_model("cnn", num_classes=10, width=32)
    teacher.train()
    with torch.no_grad():  # non-trivial running statistics for the BN term
        for _ in range(2):
            teacher(torch.rand(BATCH, 3, 32, 32))
    teacher.eval()
    student = create_model("cnn-student", num_classes=10, width=16)
    generator = create_generator("dcgan", nz=64, width=16)
    synth = create_synthesizer("dfq", teacher, generator, cfg, torch.device("cpu"))
    opt_s = torch.optim.Adam(student.parameters(), lr=cfg.student.lr)
    method = ATEsc(teacher, cfg.atesc) if atesc is not None else None
    T = cfg.dfkd.temperature

    def iteration() -> None:
        student.eval()
        steer = method.extra_loss() if method is not None else None
        x = synth.generator_step(student, extra_loss=steer).x
        if method is not None:
            split = method.analyze(x)
            t_logits, fragile = split.teacher_logits, split.fragile
        else:
            with torch.no_grad():
                t_logits = teacher(x)
            fragile = None
        student.train()
        for _ in range(STUDENT_STEPS):
            s_logits = student(x)
            if method is not None:
                loss = method.student_loss(s_logits, t_logits, fragile, T)[0]
            else:
                loss = kd_loss(s_logits, t_logits, T)
            opt_s.zero_grad(set_to_none=True)
            loss.backward()
            opt_s.step()

    return iteration


CELLS: dict[str, dict | None] = {
    "DFQ (base)": None,
    "DFQ + ATEsc, FGSM (steps 1)": {"eps": 0.03, "steps": 1},
    "DFQ + ATEsc, PGD-3": {"eps": 0.03, "steps": 3},
    "DFQ + ATEsc, FGSM + steer generator": {"eps": 0.03, "steps": 1, "steer_generator": True},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cells = {name: make_cell(spec) for name, spec in CELLS.items()}
    for run in cells.values():  # warm-up (allocator, first-call overheads)
        run()
        run()
    times: dict[str, list[float]] = {name: [] for name in cells}
    for _ in range(args.rounds):
        for name, run in cells.items():
            for _ in range(args.per_round):
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["DFQ (base)"]
    n = args.rounds * args.per_round
    lines = [
        "# ATEsc overhead per outer iteration",
        "",
        f"`python bench/atesc_overhead.py --rounds {args.rounds} --per-round {args.per_round} --threads {args.threads}`",
        "",
        f"One iteration = generator step + {STUDENT_STEPS} student steps; batch {BATCH}, generator dcgan width 16 "
        f"(nz 64), teacher `cnn` width 32, student `cnn-student` width 16, eps 0.03, CPU, "
        f"{args.threads} thread(s), torch {torch.__version__}, {platform.machine()}. ATEsc's attack runs "
        f"once per generated batch. Median of {n} interleaved iterations per row.",
        "",
        "| configuration | median s / iteration | min s | ratio to base |",
        "|---|---|---|---|",
    ]
    for name, value in med.items():
        lines.append(f"| {name} | {value:.3f} | {min(times[name]):.3f} | {value / base:.2f} |")
    lines += ["", "Target: ATEsc / base <= 1.3 (the configurations without steering)."]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
