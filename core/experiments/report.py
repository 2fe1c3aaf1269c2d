"""PNG figures (matplotlib, Agg) for a run directory or a bench suite directory.

- ``run_report(run_dir)``: ``report.png`` (student ID/OOD accuracy, ATEsc split ratio and the
  share of generated samples judged OOD-like, generator/KD/forgetting losses over steps) and
  ``samples_split.png`` (the fragile and robust sample grids the trainer saved at chosen steps).
- ``suite_report(suite_dir)``: ``suite_bars.png`` (mean ± std of the cells' late-eval student ID
  and OOD accuracy) and ``suite_curves.png`` (ID accuracy over steps, mean over seeds, per cell).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import BadInput
from core.rundir import SAMPLE_GROUPS, SAMPLES_DIR, parse_sample_file, sample_file
from core.rundir.events import EVENTS_FILE

DPI = 100
RUN_FIGSIZE = (12.0, 8.0)  # -> 1200 x 800 px
SAMPLES_PANEL = 3.0  # inches per sample grid


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _series(run_dir: Path) -> dict[str, Any]:
    from core.experiments.diagnostics import ood_share_curve
    from core.rundir.history import read_history

    if not (run_dir / EVENTS_FILE).exists():
        raise BadInput("no events.jsonl: not a run directory", where=str(run_dir))
    hist, _ = read_history(run_dir)
    ser = {name: (list(map(int, s.x)), list(s.y)) for name, s in hist.series.items()}
    start = hist.start
    teacher = None if hist.teacher_acc_id is None else (hist.teacher_acc_id, hist.teacher_acc_ood)
    return {
        "eval_step": ser["student_acc_id"][0],
        "acc_id": ser["student_acc_id"][1],
        "acc_ood": ser["student_acc_ood"][1],
        "teacher": teacher,
        "train_step": ser["split_id_ratio"][0],
        "split_id": ser["split_id_ratio"][1],
        "loss_generator": ser["loss_generator"][1],
        "loss_kd": ser["loss_kd"][1],
        "loss_forget": ser["loss_forget"][1],
        "ood_share": ood_share_curve(*ser["split_ood_ratio"]),
        "title": (f"{run_dir.name}: {start.teacher_kind} teacher, {start.method}, ATEsc {'on' if start.atesc else 'off'}"
                  if start else run_dir.name),
    }


def run_report(run_dir: Path, out_dir: Path | None = None, sample_steps: list[int] | None = None) -> list[Path]:
    """Draw a run's figures into ``out_dir`` (default: the run directory). Returns the files written."""
    plt = _plt()
    s = _series(run_dir)
    out_dir = out_dir or run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=RUN_FIGSIZE, dpi=DPI)
    ax = axes[0][0]
    ax.plot(s["eval_step"], s["acc_id"], "o-", label="student ID", color="tab:blue")
    ax.plot(s["eval_step"], s["acc_ood"], "s--", label="student OOD", color="tab:red")
    if s["teacher"]:
        ax.axhline(s["teacher"][0], color="tab:blue", alpha=0.3, lw=1, label="teacher ID")
        ax.axhline(s["teacher"][1], color="tab:red", alpha=0.3, lw=1, label="teacher OOD")
    ax.set(title="student accuracy", xlabel="step", ylabel="accuracy", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.plot(s["train_step"], s["split_id"], color="tab:green", lw=0.8, alpha=0.5, label="fragile (ID-like) share")
    steps, share = s["ood_share"]
    ax.plot(steps, share, color="tab:purple", lw=1.5, label="robust (OOD-like) share, smoothed")
    ax.set(title="ATEsc split", xlabel="step", ylabel="share of batch", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    ax = axes[1][0]
    ax.plot(s["train_step"], s["loss_generator"], color="tab:orange", lw=0.8)
    ax.set(title="generator loss", xlabel="step")
    ax = axes[1][1]
    ax.plot(s["train_step"], s["loss_kd"], lw=0.8, label="KD (fragile)")
    ax.plot(s["train_step"], s["loss_forget"], lw=0.8, label="forgetting (robust)")
    ax.set(title="student losses", xlabel="step")
    ax.legend(fontsize=8)
    fig.suptitle(s["title"], fontsize=10)
    fig.tight_layout()
    written = [out_dir / "report.png"]
    _save(fig, written[0])
    plt.close(fig)
    grid = sample_grid_figure(run_dir, out_dir / "samples_split.png", sample_steps)
    if grid is not None:
        written.append(grid)
    return written


def sample_steps_available(run_dir: Path) -> list[int]:
    """Steps with a fragile or robust sample grid saved."""
    steps: set[int] = set()
    for p in (run_dir / SAMPLES_DIR).glob("step-*-*.png"):
        parsed = parse_sample_file(p.name)
        if parsed is not None and parsed[1] is not None:
            steps.add(parsed[0])
    return sorted(steps)


def choose_steps(available: list[int], wanted: list[int] | None, n: int = 3) -> list[int]:
    """The wanted steps that exist (nearest available), else first / middle / last."""
    if not available:
        return []
    if wanted:
        return sorted({min(available, key=lambda a: abs(a - w)) for w in wanted})
    if len(available) <= n:
        return available
    idx = sorted({round(i * (len(available) - 1) / (n - 1)) for i in range(n)})
    return [available[i] for i in idx]


def sample_grid_figure(run_dir: Path, path: Path, wanted: list[int] | None = None) -> Path | None:
    """Rows = chosen steps, columns = fragile (KD) / robust (forgetting) grids. None when none saved."""
    steps = choose_steps(sample_steps_available(run_dir), wanted)
    if not steps:
        return None
    plt = _plt()
    from PIL import Image

    fig, axes = plt.subplots(len(steps), 2, figsize=(2 * SAMPLES_PANEL, len(steps) * SAMPLES_PANEL + 0.4),
                             dpi=DPI, squeeze=False)
    for row, step in enumerate(steps):
        for col, group in enumerate(SAMPLE_GROUPS):
            ax = axes[row][col]
            ax.axis("off")
            p = run_dir / sample_file(step, group)
            if p.exists():
                with Image.open(p) as im:
                    ax.imshow(im.convert("RGB"))
            label = "fragile: ID-like, KD" if group == "fragile" else "robust: OOD-like, forgetting"
            ax.set_title(f"step {step} - {label}", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig: Any, path: Path) -> None:
    import os

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, format="png")
    os.replace(tmp, path)


def suite_report(suite_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Bars of the cells' mean ± std late-eval ID/OOD accuracy, and mean ID curves per cell."""
    from core.experiments.bench import RESULTS_JSON

    path = suite_dir / RESULTS_JSON
    if not path.exists():
        raise BadInput("no results.json: not a bench suite directory (run `atesc bench` first)", where=str(suite_dir))
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"unreadable results.json: {exc}", where=str(path)) from None
    groups = sorted(payload.get("groups", []), key=lambda g: (g["teacher"], g["method"], g["variant"], g["atesc"]))
    out_dir = out_dir or suite_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    import numpy as np

    written: list[Path] = []
    n = max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n + 2), 4.5), dpi=DPI)
    x = np.arange(len(groups))
    w = 0.4
    idm = [g["acc_id_mean"] or 0 for g in groups]
    ids = [g["acc_id_std"] or 0 for g in groups]
    oodm = [g["acc_ood_mean"] or 0 for g in groups]
    oods = [g["acc_ood_std"] or 0 for g in groups]
    ax.bar(x - w / 2, idm, w, yerr=ids, capsize=2, label="student ID", color="tab:blue")
    ax.bar(x + w / 2, oodm, w, yerr=oods, capsize=2, label="student OOD", color="tab:red", alpha=0.7)
    ax.set_xticks(x, [g["key"] for g in groups], rotation=60, ha="right", fontsize=7)
    ax.set(ylim=(0, 1), ylabel=f"accuracy (mean of last {payload.get('last_evals', '?')} evals)",
           title=f"bench {payload.get('suite', {}).get('name', suite_dir.name)}: mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "suite_bars.png")
    _save(fig, written[-1])
    plt.close(fig)

    curves = _suite_curves(payload)
    if curves:
        fig, ax = plt.subplots(figsize=(9, 5), dpi=DPI)
        for key, (steps, mean) in sorted(curves.items()):
            ax.plot(steps, mean, "--" if "-base" in key else "-", lw=1.2, label=key)
        ax.set(xlabel="step", ylabel="student ID accuracy (mean over seeds)", ylim=(0, 1), title="student ID accuracy")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        written.append(out_dir / "suite_curves.png")
        _save(fig, written[-1])
        plt.close(fig)
    return written


def _suite_curves(payload: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    from core.rundir.history import read_history

    per_key: dict[str, list[dict[int, float]]] = {}
    for cell in payload.get("cells", []):
        rd = Path(cell.get("run_dir", ""))
        if not (rd / EVENTS_FILE).exists():
            continue
        acc_id = read_history(rd)[0].series["student_acc_id"]
        curve = dict(zip(map(int, acc_id.x), acc_id.y))
        if curve:
            per_key.setdefault(cell["key"], []).append(curve)
    out = {}
    for key, curves in per_key.items():
        common = sorted(set.intersection(*(set(c) for c in curves)))
        if common:
            out[key] = (common, [sum(c[s] for c in curves) / len(curves) for s in common])
    return out


def report(path: Path, out_dir: Path | None = None, sample_steps: list[int] | None = None) -> list[Path]:
    """Figures for a run directory or a suite directory (a suite also gets one report per cell)."""
    from core.experiments.bench import CELLS_DIR, is_suite_dir

    if not path.is_dir():
        raise BadInput("not a directory", where=str(path))
    if (path / EVENTS_FILE).exists():
        return run_report(path, out_dir, sample_steps)
    if is_suite_dir(path):
        written = suite_report(path, out_dir)
        for cell_dir in sorted((path / CELLS_DIR).glob("*")):
            if (cell_dir / EVENTS_FILE).exists():
                written += run_report(cell_dir, None, sample_steps)
        return written
    raise BadInput("neither a run directory (events.jsonl) nor a bench suite directory (results.json)", where=str(path))
