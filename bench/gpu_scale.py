"""GPU path of a paper-scale preset: AMP off / bf16 / fp16 (+ grad scaler) with channels_last and
cudnn.benchmark, then the same run through torchrun (1 process). Prepared for a lent GPU.

Usage (on a CUDA machine, repository root):
    python bench/gpu_scale.py [--preset paper/cifar-stl] [--iterations 200] [--out bench/results/gpu_scale.md]
    python bench/gpu_scale.py --device cpu --smoke          # checks the script itself, in about a minute

When the preset's dataset files are not under data.root, stand-in files of the real formats and
shapes (random bytes: CIFAR-10 binary records, STL-10 96x96 binaries) are written to a temporary
root, so throughput and memory are those of the real shapes; accuracies then mean nothing. The
teacher is trained for one epoch only (its quality does not change the step cost). All settings run
in one process on one card, so their ratios are meaningful; absolute numbers belong to the card
named in the output.
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.presets import resolve_preset  # noqa: E402
from core.config import load_config  # noqa: E402
from core.datasets import SOURCES, check  # noqa: E402
from core.train import Trainer  # noqa: E402

SMOKE = ["teacher.width=8", "student.width=8", "generator.width=8", "generator.nz=16", "dfkd.batch_size=16",
         "data.eval_samples=50"]  # fmt: skip


def write_stand_in(root: Path, n: int = 1000) -> None:
    """CIFAR-10 and STL-10 in their release formats, random content, ``n`` images per file."""
    rng = np.random.default_rng(0)
    cifar = root / "cifar-10-batches-bin"
    cifar.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        rec[:, 0] = rng.integers(0, 10, n)
        (cifar / name).write_bytes(rec.tobytes())
    stl = root / "stl10_binary"
    stl.mkdir(parents=True, exist_ok=True)
    for part in ("train", "test"):
        (stl / f"{part}_X.bin").write_bytes(rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tobytes())
        (stl / f"{part}_y.bin").write_bytes(rng.integers(1, 11, n, dtype=np.uint8).tobytes())


def data_root(preset: Path, device: str) -> tuple[Path, str]:
    cfg = load_config(preset)
    root = cfg.data.root.expanduser()
    needed = {d.removeprefix("patched:") for d in (cfg.data.id_domain, cfg.data.ood_domain)}
    needed = {{"cifar9": "cifar10", "stl9": "stl10"}.get(d, d) for d in needed}
    if all(d not in SOURCES or check(root, SOURCES[d]).state == "verified" for d in needed):
        return root, "real files"
    if not needed <= {"cifar10", "stl10"}:
        raise SystemExit(f"dataset files missing under {root} and no stand-in for {sorted(needed)}")
    stand_in = Path(tempfile.mkdtemp(prefix="stand-in-"))
    write_stand_in(stand_in)
    return stand_in, "stand-in (random bytes in the real formats and shapes)"


def common(args: argparse.Namespace, root: Path) -> list[str]:
    it = args.iterations
    sets = [f"dfkd.iterations={it}", f"run.eval_every={it}", f"run.checkpoint_every={it}", "teacher.epochs=1",
            f"data.root={root}", f"run.device={args.device}"]  # fmt: skip
    return sets + (SMOKE if args.smoke else [])


def in_process(preset: Path, sets: list[str], workdir: Path, tag: str) -> dict[str, float]:
    cfg = load_config(preset, sets)
    cuda = cfg.run.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    events: list = []
    t0 = time.perf_counter()
    Trainer(cfg, workdir / tag, sinks=[events.append]).run()
    wall = time.perf_counter() - t0
    rates = [e.samples_per_s for e in events if e.kind == "train"]
    rates = rates[min(10, len(rates) - 1):]  # cudnn.benchmark and allocator warm-up
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"samples_per_s": statistics.median(rates), "wall_s": wall, "peak_mem_gib": mem}


def via_torchrun(preset: Path, sets: list[str], workdir: Path) -> dict[str, float]:
    run_dir = workdir / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           "-m", "atesc_tui.cli", "run", str(preset), "--run-dir", str(run_dir), "--json"]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"samples_per_s": float("nan"), "wall_s": wall, "error": proc.stderr.strip()[-500:]}
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    rates = [e["samples_per_s"] for e in events if e["kind"] == "train"]
    world = [e["world_size"] for e in events if e["kind"] == "start"]
    return {"samples_per_s": statistics.median(rates[min(10, len(rates) - 1):]), "wall_s": wall, "world_size": world[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="paper/cifar-stl")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny widths and batch (to test this script on a CPU)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_scale.md")
    args = parser.parse_args()
    if args.smoke:
        args.iterations = min(args.iterations, 12)
    preset = resolve_preset(args.preset)
    root, data_kind = data_root(preset, args.device)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-scale-"))
    sets = common(args, root)
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({platform.processor() or platform.machine()})"
    rows: dict[str, dict[str, float]] = {}
    settings = {"fp32": ["run.amp=false"], "bf16": ["run.amp=true", "run.amp_dtype=bf16"],
                "fp16 + GradScaler": ["run.amp=true", "run.amp_dtype=fp16"]}  # fmt: skip
    for name, extra in settings.items():
        rows[name] = in_process(preset, sets + extra, workdir, name.split()[0])
        print(name, rows[name], flush=True)
    rows["torchrun, 1 process, bf16"] = via_torchrun(preset, sets + settings["bf16"], workdir)
    print(rows, flush=True)
    cmd = f"python bench/gpu_scale.py --preset {args.preset} --iterations {args.iterations}" + (" --smoke" if args.smoke else "")
    load = os.getloadavg()
    lines = [f"# GPU path: {args.preset} on {card}", "",
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, `{cmd}`, data: {data_kind}, "
             f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}", "",
             "| setting | samples/s (median) | peak GPU memory GiB | wall s (incl. teacher, 1 epoch) |", "|---|---|---|---|"]  # fmt: skip
    for name, r in rows.items():
        lines.append(f"| {name} | {r['samples_per_s']:.0f} | {r.get('peak_mem_gib', float('nan')):.2f} | {r['wall_s']:.1f} |")
    base = rows["fp32"]["samples_per_s"]
    lines += ["", "Ratios to fp32: " + ", ".join(f"{n} {r['samples_per_s'] / base:.2f}" for n, r in rows.items() if n != "fp32"), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps({"card": card, "command": cmd, "data": data_kind, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
