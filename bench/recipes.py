"""Learning curves of DFKD recipes side by side: student ID/OOD accuracy against iterations and
wall time, one row per (recipe, teacher, seed), so presets are sized by measured curves.

    python bench/recipes.py --recipes quickstart,reference --teachers sl,ntl-target --seeds 0 \
        --iterations 600 [--jobs 2] [--set k=v ...]

Each cell is a real ``atesc run bench/recipes_base.toml --json`` subprocess (the quickstart as it
was before issue 8, so recipe names keep their meaning when the quickstart changes) with one torch thread (``--jobs``
cells at a time). Cells that already finished are read back, not rerun. Appends a table to
``bench/results/recipes.md`` (date, machine load, command) and writes ``runs/recipes/curves.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.rundir.events import read_events  # noqa: E402

BASE = ROOT / "bench" / "recipes_base.toml"
# Named recipes: override lists on top of BASE.
RECIPES: dict[str, list[str]] = {
    # the project's quickstart recipe before issue [8]: Adam 1e-3, T=1, one batch reused for 5 steps
    "quickstart": [],
    # Fast-Datafree's DFQ recipe (datafree_kd.py + scripts): SGD 0.1 momentum 0.9 wd 1e-4 cosine, KD T=20,
    # balance 20, generator nz 256 / width 64, adversarial term 0, a fresh batch per student step
    "reference": ["student.optimizer=sgd", "student.lr=0.1", "student.weight_decay=1e-4", "student.schedule=cosine",
                  "dfkd.temperature=20", "dfkd.w_balance=20", "dfkd.w_adv=0", "generator.nz=256",
                  "generator.width=64", "dfkd.fresh_batches=true"],
    # the reference recipe with the quickstart's small generator (nz 64 / width 16)
    "reference-small": ["student.optimizer=sgd", "student.lr=0.1", "student.weight_decay=1e-4",
                        "student.schedule=cosine", "dfkd.temperature=20", "dfkd.w_balance=20", "dfkd.w_adv=0",
                        "dfkd.fresh_batches=true"],
    # the small reference recipe with replay from a pool instead of fresh generator batches
    "reference-pool": ["student.optimizer=sgd", "student.lr=0.1", "student.weight_decay=1e-4",
                       "student.schedule=cosine", "dfkd.temperature=20", "dfkd.w_balance=20", "dfkd.w_adv=0",
                       "dfkd.pool_size=4096"],
    # the pool recipe with ATEsc guiding the generator: feature-cluster split oriented by the relative margin
    # drop, robust samples complete the BN batch, fragile-only replay, no forgetting loss
    "pool-atesc": ["student.optimizer=sgd", "student.lr=0.1", "student.weight_decay=1e-4",
                   "student.schedule=cosine", "dfkd.temperature=20", "dfkd.w_balance=20", "dfkd.w_adv=0",
                   "dfkd.pool_size=4096", "atesc.enabled=true", "atesc.generator_split=true", "atesc.split=feature",
                   "atesc.score=rel-margin", "atesc.forget_weight=0"],
}


def cell_dir(out: Path, recipe: str, teacher: str, seed: int) -> Path:
    return out / f"{recipe}-{teacher}-s{seed}"


def run_cell(out: Path, recipe: str, teacher: str, seed: int, iterations: int, extra: list[str]) -> dict:
    run_dir = cell_dir(out, recipe, teacher, seed)
    events_path = run_dir / "events.jsonl"
    done = events_path.exists() and any(e.kind == "status" and e.status == "done" for e in read_events(events_path)[0])
    if not done:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        sets = ["atesc.enabled=false", f"teacher.kind={teacher}", f"run.seed={seed}", "teacher.seed=0",
                f"dfkd.iterations={iterations}", "run.threads=1", "run.checkpoint_every=100000", "run.eval_every=50",
                *RECIPES[recipe], *extra]
        cmd = [sys.executable, "-m", "atesc_tui.cli", "run", str(BASE), "--run-dir", str(run_dir), "--json"]
        for s in sets:
            cmd += ["--set", s]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{run_dir}: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    events, _ = read_events(events_path)
    evals = {}
    for e in events:
        if e.kind == "eval":
            evals[e.step] = (e.student_acc_id, e.student_acc_ood)
    trains = [e for e in events if e.kind == "train"]
    times = [e.t for e in events if e.kind in ("train", "eval")]
    wall = (times[-1] - times[0]) if len(times) > 1 else 0.0
    return {"recipe": recipe, "teacher": teacher, "seed": seed, "iterations": len(trains),
            "wall_s": wall, "evals": {str(k): v for k, v in sorted(evals.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default="quickstart,reference-small")
    ap.add_argument("--teachers", default="sl,ntl-target")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "recipes")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--at", default="100,200,400,600,800,1000,1500,2000", help="steps shown in the table")
    args = ap.parse_args()
    cells = [(r, t, int(s)) for r in args.recipes.split(",") for t in args.teachers.split(",")
             for s in args.seeds.split(",")]
    start = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda c: run_cell(args.out, *c, args.iterations, args.sets), cells))
    at = [a for a in map(int, args.at.split(",")) if a <= args.iterations]
    lines = [f"\n## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, load {os.getloadavg()[0]:.1f}, "
             f"{args.jobs} job(s), {time.time() - start:.0f} s", "",
             f"`python bench/recipes.py {' '.join(sys.argv[1:])}`", "",
             "| recipe | teacher | seed | s/it | " + " | ".join(f"ID@{a}" for a in at) + " | OOD@end |",
             "|---|---|---|---|" + "---|" * len(at) + "---|"]
    for r in rows:
        ev = r["evals"]
        cols = [f"{ev[str(a)][0]:.3f}" if str(a) in ev else "-" for a in at]
        last = ev[max(ev, key=int)]
        lines.append(f"| {r['recipe']} | {r['teacher']} | {r['seed']} | {r['wall_s'] / max(r['iterations'], 1):.3f} | "
                     + " | ".join(cols) + f" | {last[1]:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    results = ROOT / "bench" / "results" / "recipes.md"
    if not results.exists():
        results.write_text("# DFKD recipes: learning curves (bench/recipes.py)\n\nStudent accuracy on 500 real test "
                           "images; ATEsc off; teacher seed 0; one torch thread per cell.\n")
    with results.open("a") as fh:
        fh.write(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curves.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
