"""How well ATEsc's split finds the trap on generated samples, per run (issue 9's split target).

    python bench/split_quality.py runs/bench/converged [--after 100]

For every run directory under the folder (a suite's cells, or one run), from its train events after
step ``--after``: the mean fragile share, the share of the teacher's OOD sink class (its most frequent
answer on real OOD images, a diagnostic only) in the fragile and robust groups, the split's AUROC for
telling sink-class samples from the rest (a binary split's AUROC is its balanced accuracy: mean of
the share of sink samples it calls robust and of other samples it calls fragile), the raw score's
AUROC, and the feature clusters' separation. Appends the table to ``bench/results/split_quality.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.rundir.events import read_events  # noqa: E402


def split_auroc(fragile_share: float, sink_fragile: float, sink_robust: float) -> float | None:
    """Balanced accuracy of "robust" as a detector of sink-class samples, from one batch's shares."""
    p_f, p_r = fragile_share, 1.0 - fragile_share
    sink = sink_fragile * p_f + sink_robust * p_r
    if sink <= 0 or sink >= 1:
        return None
    tpr = sink_robust * p_r / sink  # sink samples called robust
    tnr = (1 - sink_fragile) * p_f / (1 - sink)  # other samples called fragile
    return (tpr + tnr) / 2


def run_row(run_dir: Path, after: int) -> dict[str, float | str | None] | None:
    events, _ = read_events(run_dir / "events.jsonl")
    trains = [e for e in events if e.kind == "train" and e.step > after
              and (e.sink_share_fragile is not None or e.sink_share_robust is not None)]
    if not trains:
        return None

    def mean(values: list[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return statistics.fmean(got) if got else None

    aurocs = [split_auroc(e.split_id_ratio, e.sink_share_fragile or 0.0, e.sink_share_robust or 0.0) for e in trains]
    return {"run": run_dir.name, "steps": len(trains), "fragile": mean([e.split_id_ratio for e in trains]),
            "sink_fragile": mean([e.sink_share_fragile for e in trains]),
            "sink_robust": mean([e.sink_share_robust for e in trains]),
            "split_auroc": mean(aurocs), "score_auroc": mean([e.score_auroc_sink for e in trains]),
            "separation": mean([e.split_separation for e in trains])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--after", type=int, default=100)
    args = ap.parse_args()
    cells = args.folder / "cells"
    if (args.folder / "events.jsonl").exists():
        dirs = [args.folder]
    else:
        dirs = sorted(p for p in (cells if cells.is_dir() else args.folder).iterdir() if (p / "events.jsonl").exists())
    rows = [r for r in (run_row(d, args.after) for d in dirs) if r is not None]

    def f(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v if v is not None else "–")

    cols = ["run", "steps", "fragile", "sink_fragile", "sink_robust", "split_auroc", "score_auroc", "separation"]
    lines = [f"\n## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}", "",
             f"`python bench/split_quality.py {' '.join(sys.argv[1:])}`", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f(r[c]) for c in cols) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / "split_quality.md"
    if not out.exists():
        out.write_text("# ATEsc's split on generated samples (bench/split_quality.py)\n\nsink = the teacher's most "
                       "frequent answer on real OOD images (diagnostic only). split_auroc: balanced accuracy of "
                       "'robust' as a sink detector; score_auroc: the raw robustness score's AUROC.\n")
    with out.open("a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
