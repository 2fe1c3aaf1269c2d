"""Teacher quality and training time for every ``teacher.kind`` on one domain pair.

Usage: python bench/teachers.py [--threads 2] [--seeds 0] [--kinds sl,ntl-target,ntl-source,cuti]
                                [--set teacher.epochs=8 ...]   (writes bench/teachers.md)

Each cell trains from scratch with ``core.teachers.train.train_teacher`` (no cache) from the built-in
``presets/teacher-<kind>.toml`` plus ``--set`` overrides, and reports test accuracy on the ID and
OOD domains, wall seconds and process CPU seconds. CPU seconds matter on a shared machine: wall
time there depends on what else is running. Targets (issue): target-specified NTL ID >= 0.95 and
OOD <= 0.15 in <= 90 s on 2 cores; SL ID >= 0.97 and OOD >= 0.50.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--kinds", default="sl,ntl-target,ntl-source,cuti")
    parser.add_argument("--root", default=None, help="data.root (default: the config default)")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--out", default=str(ROOT / "bench" / "teachers.md"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from core.config import load_config
    from core.teachers.train import train_teacher

    rows = []
    for kind in args.kinds.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            sets = list(args.sets) + [f"run.seed={seed}", "run.device=cpu"]
            if args.root:
                sets.append(f"data.root='{args.root}'")
            preset = ROOT / "presets" / f"teacher-{kind}.toml"
            cfg = load_config(preset, sets, environ={})
            cpu0 = time.process_time()
            res = train_teacher(cfg)
            cpu = time.process_time() - cpu0
            load = os.getloadavg()[0]
            cmd = f"atesc teacher presets/teacher-{kind}.toml" + "".join(f" --set {s}" for s in args.sets)
            rows.append((kind, seed, res.acc_id, res.acc_ood, res.seconds, cpu, load, cmd))
            print(f"{kind:11s} seed {seed}: ID {res.acc_id:.3f} OOD {res.acc_ood:.3f} "
                  f"{res.seconds:.1f} s wall, {cpu:.1f} s CPU, load {load:.1f}", flush=True)
            _write(args, rows)  # after every cell, so an interrupted bench keeps what it measured
    print(f"wrote {args.out}")


TUNING = [
    "## How the defaults were chosen (single-seed probes, 1 thread, `train_teacher` on mnist vs patched:mnist)",
    "",
    "| change | ntl-target ID / OOD | sl ID / OOD |",
    "|---|---|---|",
    "| start: 3 conv blocks + global average pool, Adam 1e-3, alpha = beta = 0.1, 6 epochs | 0.957 / 0.946 | 0.959 / 0.953 (10 ep) |",
    "| beta 1.0, alpha 0.3, 5 epochs | 0.917 / 0.100 | |",
    "| beta 1.0, alpha 1.0, 5 epochs (OOD clamp engages at KL 1: too early) | 0.929 / 0.584 | |",
    "| + lr 3e-3, decay 0.996 per step, alpha 0.3, 5 epochs | 0.937 / 0.102 | 0.932 / 0.893 |",
    "| + a 4x4 conv block over the last map (position-aware features), alpha 0.3 | 0.986 / 0.264 | 0.991 / 0.992 |",
    "| same, alpha 0.2, 8 epochs | 0.991 / 0.274 | |",
    "| **same, alpha 0.1, beta 1.0, 8 epochs (defaults)** | **0.989 / 0.100** | |",
    "| same, reference beta 0.1, 8 epochs | 0.993 / 0.283 | |",
    "| cuti, alpha 0.1, 8 epochs | 0.991 / 0.125 | |",
    "| ntl-source, source_augs [patch] only, 8 / 14 epochs | 0.989 / 0.965, 0.993 / 0.977 | |",
    "| ntl-source, [patch], shift 0, 8 epochs | 0.990 / 0.907 | |",
    "",
    "Source-only NTL blocks its own synthetic OOD (training KL_ood reaches the 10-nat clamp) but that",
    "does not carry over to the fixed corner patch of patched:mnist: random noise squares at random",
    "places are not the trigger. It stays a weak baseline on this pair; ntl-target and cuti block it.",
    "",
    "With the reference weights (alpha = beta = 0.1) the OOD term's gradient is at most",
    "alpha * beta * MMD ~ 0.01-0.03 of the ID term's, so blocking starts late; beta = 1 saturates the",
    "MMD gate early and alpha = 0.1 keeps pushing the OOD cross-entropy up to 10 nats (a larger alpha",
    "stops the push while OOD predictions are still partly right).",
]


def _write(args: argparse.Namespace, rows: list[tuple]) -> None:
    argv = " ".join(sys.argv[1:])
    lines = [
        "# Teachers: mnist -> patched:mnist",
        "",
        f"`python bench/teachers.py {argv}` ({args.threads} torch threads; test splits: 1000 images per domain).",
        "Wall seconds include loading the cached domains and the final evaluation. CPU s is the process's",
        "CPU time: with 1 thread on an idle core it is the wall time; with 2 threads on a busy machine",
        "OpenMP spin-waiting inflates it. `load` is the 1-minute load average when the cell finished",
        "(other engineers' jobs shared the 2 cores, so wall time here overstates an idle machine's).",
        "",
        "| kind | seed | ID acc | OOD acc | seconds (wall) | CPU s | load | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, seed, a_id, a_ood, sec, cpu, load, cmd in rows:
        lines.append(f"| {kind} | {seed} | {a_id:.3f} | {a_ood:.3f} | {sec:.1f} | {cpu:.1f} | {load:.1f} | `{cmd}` |")
    lines += ["", *TUNING]
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
