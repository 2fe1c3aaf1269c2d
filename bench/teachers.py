"""Teacher quality and training time for every ``teacher.kind`` on one domain pair.

Usage: python bench/teachers.py [--threads 2] [--seeds 0] [--kinds sl,ntl-target,ntl-source,cuti]
                                [--set teacher.epochs=8 ...]   (writes bench/teachers.md)

Each cell trains from scratch with ``core.ntl.train_teacher`` (no cache) from the built-in
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
    from core.ntl import train_teacher

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

    argv = " ".join(sys.argv[1:])
    lines = [
        "# Teachers: mnist -> patched:mnist",
        "",
        f"`python bench/teachers.py {argv}` ({args.threads} torch threads; test splits: 1000 images per domain).",
        "Wall seconds include loading the cached domains and the final evaluation; CPU seconds are the",
        "process's CPU time (what wall time would be on an idle machine, times the thread count's",
        "parallel efficiency). `load` is the 1-minute load average when the cell finished: other jobs",
        "shared the 2 cores.",
        "",
        "| kind | seed | ID acc | OOD acc | seconds (wall) | CPU s | load | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, seed, a_id, a_ood, sec, cpu, load, cmd in rows:
        lines.append(f"| {kind} | {seed} | {a_id:.3f} | {a_ood:.3f} | {sec:.1f} | {cpu:.1f} | {load:.1f} | `{cmd}` |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
