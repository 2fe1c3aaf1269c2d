"""Data-parallel throughput on CPU: `atesc run --nproc 2` (gloo) against one process, same global batch.

Usage: python bench/ddp_cpu.py [--iterations 60] [--batch 64] [--repeats 2] [--out bench/results/ddp_cpu.md]

The two settings alternate (1, 2, 1, 2, ...) on the same machine so that load drifts hit both; the
figure is the median of the global samples/s that rank 0 reports per step (warm-up steps skipped).
Every process uses one torch thread, so 2 processes need 2 free cores to scale; the load average
before and after is written next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESET = """\
[data]
id_domain = "mnist"
ood_domain = "patched:mnist"
eval_samples = 200
[teacher]
kind = "ntl-target"
width = 8
epochs = 1
[student]
width = 16
[generator]
width = 16
nz = 32
[dfkd]
method = "dfq"
iterations = {iterations}
batch_size = {batch}
student_steps = 5
[run]
name = "ddp-bench"
device = "cpu"
threads = 1
eval_every = 1000000
checkpoint_every = 1000000
"""


def one_run(preset: Path, nproc: int, workdir: Path, tag: str) -> dict[str, float]:
    run_dir = workdir / tag
    cmd = [sys.executable, "-m", "atesc_tui.cli", "run", str(preset), "--run-dir", str(run_dir), "--json"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    rates = [e["samples_per_s"] for e in events if e["kind"] == "train"][5:]
    return {"samples_per_s": statistics.median(rates), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64, help="global batch (each of 2 processes draws half)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ddp_cpu.md")
    args = parser.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    workdir = Path(tempfile.mkdtemp(prefix="ddp-bench-"))
    preset = workdir / "preset.toml"
    preset.write_text(PRESET.format(iterations=args.iterations, batch=args.batch))
    one_run(preset, 1, workdir, "warmup")  # builds the data and teacher caches outside the timings
    load_before = os.getloadavg()
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for rep in range(args.repeats):
        for nproc in (1, 2):
            results[nproc].append(one_run(preset, nproc, workdir, f"n{nproc}-{rep}"))
    load_after = os.getloadavg()
    med = {n: statistics.median(r["samples_per_s"] for r in rs) for n, rs in results.items()}
    cmd = f"python bench/ddp_cpu.py --iterations {args.iterations} --batch {args.batch} --repeats {args.repeats}"
    lines = [
        "# Data-parallel throughput on CPU (gloo)", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}; `{cmd}`", "",
        f"Load average (1/5/15 min) before: {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}; "
        f"after: {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}", "",
        "| processes | global batch | samples/s per run (median of steps) | wall s per run |", "|---|---|---|---|",
    ]
    for n, rs in results.items():
        rates = ", ".join(f"{r['samples_per_s']:.1f}" for r in rs)
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
        lines.append(f"| {n} | {args.batch} | {rates} | {walls} |")
    lines += ["", f"**2-process / 1-process samples/s: {med[2] / med[1]:.2f}** (medians {med[2]:.1f} / {med[1]:.1f})", ""]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
