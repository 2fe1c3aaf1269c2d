"""Benchmark suites: a grid of DFKD runs (teacher kind x method x ATEsc off/on x variants x seeds).

A suite is a TOML file with a ``[suite]`` table::

    [suite]
    name = "offline"
    base = "quickstart"                  # preset every cell starts from (name, or path next to the suite)
    teachers = ["sl", "ntl-target"]      # teacher.kind values
    methods = ["dfq", "cmi"]             # dfkd.method values
    atesc = [false, true]                # atesc.enabled values
    seeds = [0, 1, 2]                    # run.seed values
    last_evals = 3                       # a cell's score: mean of its last N evaluations
    set = ["dfkd.iterations=120"]        # overrides for every cell (``--set`` syntax)

    [[suite.variants]]                   # optional: named override lists, one cell row each
    name = "eps0.1"
    set = ["atesc.eps=0.1"]

    [suite.axes]                         # optional: cartesian ablation axes, value -> overrides
    forget_weight = ["atesc.forget_weight=0.2", "atesc.forget_weight=1.0"]

Cells run one after another in their own run directory ``<suite dir>/cells/<cell id>`` through
:class:`core.train.Trainer` (in this process, or in a subprocess running ``atesc run``), or
``jobs`` at a time as subprocesses that divide the cores between them (``core.threads``). A cell whose
events end with ``done`` is skipped; one with a checkpoint resumes from it; one without is restarted.
``results.json`` and ``results.md`` (mean +- sample std over seeds) are rewritten after each cell.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.config import DFKDMethodName, TeacherKindName
from core.errors import BadInput
from core.threads import RUNS_ENV

CELLS_DIR = "cells"
RESULTS_JSON = "results.json"
TIMING_FILE = "bench_timing.json"  # in a cell's run directory: seconds it has run, over all sessions
RESULTS_MD = "results.md"
SUITE_COPY = "suite.toml"


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.=+-]+$", min_length=1, max_length=60)
    set: list[str] = Field(default_factory=list)


class Suite(BaseModel):
    """A bench grid. Every list is an axis of the cartesian product; ``set`` applies to every cell."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("suite", pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=80)
    description: str = ""
    base: str = Field("quickstart", description="Preset each cell starts from (built-in name or path)")
    teachers: list[TeacherKindName] = Field(default_factory=lambda: ["ntl-target"])
    methods: list[DFKDMethodName] = Field(default_factory=lambda: ["dfq"])
    atesc: list[bool] = Field(default_factory=lambda: [False, True])
    seeds: list[int] = Field(default_factory=lambda: [0])
    set: list[str] = Field(default_factory=list, description="Overrides applied to every cell")
    variants: list[Variant] = Field(default_factory=list, description="Named override lists (one row each)")
    axes: dict[str, list[str | list[str]]] = Field(default_factory=dict, description="Cartesian ablation axes")
    last_evals: int = Field(3, ge=1, le=1000, description="Score = mean of the last N evaluations of a cell")
    mode: Literal["inprocess", "subprocess"] = "inprocess"
    jobs: int = Field(1, ge=1, le=64, description="Cells run at once (each a subprocess; auto run.threads divides the cores)")

    @field_validator("teachers", "methods", "atesc", "seeds")
    @classmethod
    def _non_empty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("must list at least one value")
        if len(set(map(str, v))) != len(v):
            raise ValueError("duplicate values")
        return v


class CellIdentity(BaseModel):
    """Where a cell sits in the grid. ``key`` identifies the cell across seeds (what is averaged)."""

    id: str
    key: str
    teacher: str
    method: str
    atesc: bool
    variant: str = ""
    seed: int


class Cell(CellIdentity):
    """One run of the grid."""

    overrides: list[str]


class CellResult(CellIdentity):
    status: str = "pending"
    step: int = 0
    iterations: int | None = None
    acc_id: float | None = Field(None, description="mean student ID accuracy over the last N evaluations")
    acc_ood: float | None = Field(None, description="mean student OOD accuracy over the last N evaluations")
    final_acc_id: float | None = None
    final_acc_ood: float | None = None
    evals_used: int = 0
    teacher_acc_id: float | None = None
    teacher_acc_ood: float | None = None
    split_id_ratio: float | None = Field(None, description="mean fragile share of the batches (1.0 without ATEsc)")
    s_per_iter: float | None = None
    seconds: float | None = None
    run_dir: str = ""


class GroupResult(BaseModel):
    key: str
    teacher: str
    method: str
    atesc: bool
    variant: str = ""
    n: int
    seeds: list[int]
    acc_id_mean: float | None
    acc_id_std: float | None
    acc_ood_mean: float | None
    acc_ood_std: float | None
    s_per_iter: float | None = None


# ------------------------------------------------------------------ loading and expansion


def load_suite(path: Path) -> Suite:
    from core.config import read_toml

    data = read_toml(path)
    table = data.get("suite")
    if not isinstance(table, dict) or set(data) - {"suite"}:
        raise BadInput("a bench suite needs exactly one [suite] table", where=str(path))
    try:
        return Suite(**table)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "suite." + ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise BadInput(msg, where=str(path), field=field) from None


def _axis_overrides(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _axis_label(name: str, value: str | list[str]) -> str:
    items = _axis_overrides(value)
    short = ",".join(o.partition("=")[2] for o in items) or "none"
    return f"{name}={short}".replace("/", "_").replace(" ", "")


def expand(suite: Suite) -> list[Cell]:
    """All cells, in run order: teacher, method, variant/axes, ATEsc off before on, then seeds.

    Cells with the same id (e.g. two spellings of one grid point) are kept once.
    """
    variants: list[tuple[str, list[str]]] = [(v.name, list(v.set)) for v in suite.variants] or [("", [])]
    axis_items = list(suite.axes.items())
    combos: list[tuple[str, list[str]]] = []
    for vname, vset in variants:
        for values in itertools.product(*[vals for _, vals in axis_items]) if axis_items else [()]:
            labels = [vname] if vname else []
            overrides = list(vset)
            for (aname, _), value in zip(axis_items, values):
                labels.append(_axis_label(aname, value))
                overrides += _axis_overrides(value)
            combos.append(("-".join(labels), overrides))
    cells: list[Cell] = []
    seen: set[str] = set()
    for teacher, method, (label, overrides), on, seed in itertools.product(
        suite.teachers, suite.methods, combos, suite.atesc, suite.seeds
    ):
        # The grid's own values first, so a suite-wide ``set`` or a variant may override them (a
        # variant "off" with atesc.enabled=false is a DFKD-only row); the last value wins.
        cell_overrides = [f"teacher.kind={teacher}", f"dfkd.method={method}",
                          f"atesc.enabled={'true' if on else 'false'}", f"run.seed={seed}", *suite.set, *overrides]
        on = _effective_bool(cell_overrides, "atesc.enabled", on)
        key = f"{teacher}-{method}-{'atesc' if on else 'base'}" + (f"-{label}" if label else "")
        cid = f"{key}-s{seed}"
        if cid in seen:
            continue
        seen.add(cid)
        cells.append(Cell(id=cid, key=key, teacher=teacher, method=method, atesc=on, variant=label, seed=seed,
                          overrides=cell_overrides))
    return cells


def _effective_bool(overrides: list[str], key: str, default: bool) -> bool:
    value = default
    for o in overrides:
        k, _, v = o.partition("=")
        if k.strip() == key:
            value = v.strip().lower() == "true"
    return value


def select(cells: list[Cell], only: str | None) -> list[Cell]:
    """Cells whose id matches the glob ``only`` (``*`` is added around a pattern without one)."""
    if not only:
        return cells
    patterns = [p if any(ch in p for ch in "*?[") else f"*{p}*" for p in only.split(",")]
    return [c for c in cells if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]


def resolve_base(suite: Suite, suite_path: Path | None) -> Path:
    from core.presets import resolve_preset

    if suite_path is not None:
        local = (suite_path.parent / suite.base)
        if local.is_file():
            return local
    return resolve_preset(suite.base)


def cell_config(cell: Cell, base: Path, run_dir: Path) -> Any:
    from core.config import load_config

    return load_config(base, [*cell.overrides, f"run.name={cell.id[:80]}", f"run.dir={run_dir}"])


# ------------------------------------------------------------------ reading a cell's outcome


def summarize_cell(cell: Cell, run_dir: Path, last_evals: int) -> CellResult:
    """Read a cell's run directory (events) into a ``CellResult``; a missing directory is pending."""
    from core.rundir.events import EVENTS_FILE
    from core.rundir.history import read_history

    res = CellResult(**cell.model_dump(include=set(CellIdentity.model_fields)),
                     run_dir=str(run_dir))
    if not (run_dir / EVENTS_FILE).exists():
        return res
    hist, _ = read_history(run_dir)
    res.status = hist.status or "new"
    res.teacher_acc_id, res.teacher_acc_ood = hist.teacher_acc_id, hist.teacher_acc_ood
    if hist.start is not None:
        res.iterations = hist.start.iterations
    split, rate = hist.series["split_id_ratio"], hist.series["samples_per_s"]
    if split:
        res.step = int(split.x[-1])
        res.split_id_ratio = statistics.fmean(split.y)
        batch = _batch_size(run_dir)
        if batch is not None:
            res.s_per_iter = statistics.median(batch / max(r, 1e-9) for r in rate.y)
    acc_id, acc_ood = hist.series["student_acc_id"], hist.series["student_acc_ood"]
    if acc_id:
        res.step = max(res.step, int(acc_id.x[-1]))
        tail = [i for i, step in enumerate(acc_id.x) if step > 0][-last_evals:] or [len(acc_id) - 1]
        res.acc_id = statistics.fmean(acc_id.y[i] for i in tail)
        res.acc_ood = statistics.fmean(acc_ood.y[i] for i in tail)
        res.final_acc_id, res.final_acc_ood = acc_id.y[-1], acc_ood.y[-1]
        res.evals_used = len(tail)
    res.seconds = _timing(run_dir)
    return res


def _batch_size(run_dir: Path) -> int | None:
    import tomllib

    from core.rundir import CONFIG_FILE

    try:
        return int(tomllib.loads((run_dir / CONFIG_FILE).read_text())["dfkd"]["batch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value; None for none)."""
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values)


def aggregate(results: list[CellResult]) -> list[GroupResult]:
    """Group finished cells by key (all seeds of one grid point): mean +- sample std of the scores."""
    groups: dict[str, list[CellResult]] = {}
    for r in results:
        if r.status == "done" and r.acc_id is not None:
            groups.setdefault(r.key, []).append(r)
    out: list[GroupResult] = []
    for key, rs in groups.items():
        id_m, id_s = mean_std([r.acc_id for r in rs if r.acc_id is not None])
        ood_m, ood_s = mean_std([r.acc_ood for r in rs if r.acc_ood is not None])
        spi = [r.s_per_iter for r in rs if r.s_per_iter is not None]
        first = rs[0]
        out.append(GroupResult(
            key=key, teacher=first.teacher, method=first.method, atesc=first.atesc, variant=first.variant,
            n=len(rs), seeds=sorted(r.seed for r in rs), acc_id_mean=id_m, acc_id_std=id_s,
            acc_ood_mean=ood_m, acc_ood_std=ood_s, s_per_iter=statistics.fmean(spi) if spi else None,
        ))
    return out


def _scores(results: list[CellResult], key: str, field: str) -> dict[int, float]:
    return {r.seed: getattr(r, field) for r in results
            if r.key == key and r.status == "done" and getattr(r, field) is not None}


def comparisons(groups: list[GroupResult], results: list[CellResult] | None = None) -> list[dict[str, Any]]:
    """ATEsc on minus off for every (teacher, method, variant) that has both (ID/OOD, points).

    ``delta_*_points``: difference of the arms' means. With ``results``, ``paired_id`` /
    ``paired_ood`` hold the paired difference over the seeds both arms finished (same teacher and
    student initialisation per seed) with its 95 % t-interval, in points.
    """
    from core.stats import paired_difference

    by = {(g.teacher, g.method, g.variant, g.atesc): g for g in groups}
    rows = []
    base_by_tm: dict[tuple[str, str], GroupResult] = {}
    for g in groups:  # fallback: the plain base row, else the only ATEsc-off row (an ablation's "off")
        if not g.atesc and (not g.variant or (g.teacher, g.method) not in base_by_tm):
            base_by_tm[(g.teacher, g.method)] = g
    for (teacher, method, variant, on), g in by.items():
        if not on:
            continue
        base = by.get((teacher, method, variant, False)) or base_by_tm.get((teacher, method))
        if base is None or g.acc_id_mean is None or base.acc_id_mean is None:
            continue
        row: dict[str, Any] = {
            "teacher": teacher, "method": method, "variant": variant,
            "base_acc_id": base.acc_id_mean, "atesc_acc_id": g.acc_id_mean,
            "delta_id_points": 100 * (g.acc_id_mean - base.acc_id_mean),
            "delta_ood_points": 100 * ((g.acc_ood_mean or 0) - (base.acc_ood_mean or 0)),
            "n_base": base.n, "n_atesc": g.n,
        }
        for field, name in (("acc_id", "paired_id"), ("acc_ood", "paired_ood")):
            if results is None:
                continue
            a = {k: 100 * v for k, v in _scores(results, base.key, field).items()}
            d = paired_difference(a, {k: 100 * v for k, v in _scores(results, g.key, field).items()})
            row[name] = d.model_dump() if d is not None else None
        rows.append(row)
    return rows


def gap_closed(groups: list[GroupResult], comps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each NTL teacher and method: the trap (SL-teacher base minus NTL-teacher base, points)
    and the share of it ATEsc's paired gain closes."""
    base = {(g.teacher, g.method): g for g in groups if not g.atesc and not g.variant}
    rows = []
    for c in comps:
        sl = base.get(("sl", c["method"]))
        ntl = base.get((c["teacher"], c["method"]))
        paired = c.get("paired_id")
        if c["teacher"] == "sl" or c["variant"] or sl is None or ntl is None or paired is None:
            continue
        gap = 100 * ((sl.acc_id_mean or 0) - (ntl.acc_id_mean or 0))
        rows.append({"teacher": c["teacher"], "method": c["method"], "gap_points": gap,
                     "gain_points": paired["mean"], "gain_ci": [paired["ci_low"], paired["ci_high"]],
                     "closed": paired["mean"] / gap if gap > 0 else None})
    return rows


def _ci(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    if d.get("ci_low") is None:
        return f"{d['mean']:+.1f} (n={d['n']})"
    return f"{d['mean']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}] (n={d['n']})"


def _pct(m: float | None, s: float | None) -> str:
    if m is None:
        return "–"
    return f"{100 * m:.1f} ± {100 * (s or 0):.1f}"


def results_markdown(suite: Suite, results: list[CellResult], groups: list[GroupResult]) -> str:
    lines = [f"# Bench `{suite.name}`", ""]
    if suite.description:
        lines += [suite.description, ""]
    done = sum(r.status == "done" for r in results)
    lines += [f"Cells finished: {done}/{len(results)}. Accuracy in %, mean ± sample std over seeds of each cell's "
              f"mean of its last {suite.last_evals} evaluations.", ""]
    lines += ["| teacher | method | ATEsc | variant | seeds | student ID | student OOD | s/iter |",
              "|---|---|---|---|---|---|---|---|"]
    for g in sorted(groups, key=lambda g: (g.teacher, g.method, g.variant, g.atesc)):
        spi = f"{g.s_per_iter:.2f}" if g.s_per_iter is not None else "–"
        lines.append(f"| {g.teacher} | {g.method} | {'on' if g.atesc else 'off'} | {g.variant or '–'} | "
                     f"{','.join(map(str, g.seeds))} | {_pct(g.acc_id_mean, g.acc_id_std)} | "
                     f"{_pct(g.acc_ood_mean, g.acc_ood_std)} | {spi} |")
    comps = comparisons(groups, results)
    if comps:
        lines += ["", "ATEsc minus the same DFKD without ATEsc (points of student accuracy). ΔID/ΔOOD: difference of "
                  "the means; paired: mean of the per-seed differences (same teacher and student initialisation) "
                  "with its 95 % t-interval:", "",
                  "| teacher | method | variant | ΔID | ΔOOD | seeds (off/on) | paired ΔID [95 % CI] | paired ΔOOD |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in sorted(comps, key=lambda c: (c["teacher"], c["method"], c["variant"])):
            lines.append(f"| {c['teacher']} | {c['method']} | {c['variant'] or '–'} | {c['delta_id_points']:+.1f} | "
                         f"{c['delta_ood_points']:+.1f} | {c['n_base']}/{c['n_atesc']} | {_ci(c.get('paired_id'))} | "
                         f"{_ci(c.get('paired_ood'))} |")
    gaps = gap_closed(groups, comps)
    if gaps:
        lines += ["", "The trap and how much of it ATEsc closes (SL-teacher base minus NTL-teacher base; paired gain):",
                  "", "| teacher | method | trap (points) | ATEsc gain [95 % CI] | share closed |", "|---|---|---|---|---|"]
        for g in gaps:
            lo, hi = g["gain_ci"]
            ci = f" [{lo:+.1f}, {hi:+.1f}]" if lo is not None else ""
            closed = f"{100 * g['closed']:.0f} %" if g["closed"] is not None else "–"
            lines.append(f"| {g['teacher']} | {g['method']} | {g['gap_points']:.1f} | {g['gain_points']:+.1f}{ci} | "
                         f"{closed} |")
    pending = [r.id for r in results if r.status != "done"]
    if pending:
        lines += ["", f"Not finished ({len(pending)}): " + ", ".join(pending)]
    return "\n".join(lines) + "\n"


def write_results(suite_dir: Path, suite: Suite, results: list[CellResult]) -> dict[str, Any]:
    from core.rundir.safefile import write_atomic

    groups = aggregate(results)
    payload = {
        "suite": suite.model_dump(mode="json"),
        "last_evals": suite.last_evals,
        "cells": [r.model_dump(mode="json") for r in results],
        "groups": [g.model_dump(mode="json") for g in groups],
        "comparisons": (comps := comparisons(groups, results)),
        "gap_closed": gap_closed(groups, comps),
    }
    write_atomic(suite_dir / RESULTS_JSON, json.dumps(payload, indent=2).encode())
    write_atomic(suite_dir / RESULTS_MD, results_markdown(suite, results, groups).encode())
    return payload


# ------------------------------------------------------------------ running


CellCallback = Callable[[Cell, str], None]
EventCallback = Callable[[Cell, Any], None]


class Bench:
    """Runs a suite's cells in ``suite_dir``, skipping finished cells and resuming interrupted ones."""

    def __init__(self, suite: Suite, suite_dir: Path, *, suite_path: Path | None = None,
                 on_cell: CellCallback | None = None, on_event: EventCallback | None = None,
                 runner: Sequence[str] = ()) -> None:
        self.suite = suite
        # mode = "subprocess": the command line that runs `run`/`resume ... --json` for a cell (the
        # caller's CLI, e.g. [python, -m, atesc_tui.cli]: this library does not know the app).
        self.runner = list(runner)
        self.suite_dir = suite_dir
        self.suite_path = suite_path
        self.base = resolve_base(suite, suite_path)
        self.cells = expand(suite)
        self.on_cell = on_cell or (lambda c, s: None)
        self.on_event = on_event or (lambda c, e: None)
        self._lock = threading.Lock()  # callbacks and results files, when cells run in parallel
        self._stopping = False

    @classmethod
    def from_file(cls, path: Path, suite_dir: Path | None = None, **kw: Any) -> Bench:
        suite = load_suite(path)
        return cls(suite, suite_dir or Path("runs") / "bench" / suite.name, suite_path=path, **kw)

    def run_dir(self, cell: Cell) -> Path:
        return self.suite_dir / CELLS_DIR / cell.id

    def configs(self, cells: list[Cell] | None = None) -> list[Any]:
        """Resolve every cell's config (bad overrides fail here, before anything runs)."""
        return [cell_config(c, self.base, self.run_dir(c)) for c in (cells or self.cells)]

    def results(self) -> list[CellResult]:
        out = []
        for c in self.cells:
            out.append(summarize_cell(c, self.run_dir(c), self.suite.last_evals))
        return out

    def state_of(self, cell: Cell) -> Literal["done", "resume", "fresh"]:
        from core.rundir.checkpoint import latest_checkpoint
        from core.rundir import CHECKPOINT_DIR, CONFIG_FILE

        rd = self.run_dir(cell)
        if not (rd / CONFIG_FILE).exists():
            return "fresh"
        if summarize_cell(cell, rd, 1).status == "done":
            return "done"
        return "resume" if latest_checkpoint(rd / CHECKPOINT_DIR) is not None else "fresh"

    def run(self, only: str | None = None) -> dict[str, Any]:
        """Run the selected cells (``suite.jobs`` at a time); rewrite results after each. Returns the results."""
        selected = select(self.cells, only)
        self.configs(selected)  # validate all first
        if (self.suite.mode == "subprocess" or self.suite.jobs > 1) and not self.runner:
            raise BadInput("suite mode 'subprocess' needs a command to run cells (atesc bench passes its own)",
                           field="suite.mode")
        self.suite_dir.mkdir(parents=True, exist_ok=True)
        if self.suite_path is not None and self.suite_path.resolve() != (self.suite_dir / SUITE_COPY).resolve():
            shutil.copyfile(self.suite_path, self.suite_dir / SUITE_COPY)
        if self.suite.jobs == 1:
            for cell in selected:
                self._run_cell(cell)
        else:
            self._run_parallel(selected)
        return write_results(self.suite_dir, self.suite, self.results())

    def _run_parallel(self, cells: list[Cell]) -> None:
        """``jobs`` cells at once, each an ``atesc run`` process told how many share the cores."""
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        with ThreadPoolExecutor(max_workers=self.suite.jobs) as pool:
            futures = [pool.submit(self._run_cell, cell) for cell in cells]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except KeyboardInterrupt:
                # The children got the same SIGINT and checkpoint; queued cells must not start.
                self._stopping = True
                for f in futures:
                    f.cancel()
                raise
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self._stopping = True
                for f in futures:
                    f.cancel()
                raise failed[0].exception()  # type: ignore[misc]

    def _run_cell(self, cell: Cell) -> None:
        from core.rundir.safefile import write_atomic

        if self._stopping:
            return
        state = self.state_of(cell)
        if state == "done":
            with self._lock:
                self.on_cell(cell, "skipped")
            return
        rd = self.run_dir(cell)
        if state == "fresh" and rd.exists():
            shutil.rmtree(rd)  # started but never checkpointed: nothing to resume
        with self._lock:
            self.on_cell(cell, "resumed" if state == "resume" else "started")
        t0 = time.perf_counter()
        previous = (_timing(rd) or 0.0) if state == "resume" else 0.0
        try:
            if self.suite.mode == "subprocess" or self.suite.jobs > 1:
                self._run_subprocess(cell, resume=state == "resume")
            else:
                self._run_inprocess(cell, resume=state == "resume")
        finally:
            with self._lock:
                if rd.exists():
                    write_atomic(rd / TIMING_FILE,
                                 json.dumps({"seconds": previous + time.perf_counter() - t0}).encode())
                write_results(self.suite_dir, self.suite, self.results())
        with self._lock:
            self.on_cell(cell, "done")

    def _run_inprocess(self, cell: Cell, *, resume: bool) -> None:
        from core.train import Interrupted, StopFlag, Trainer, prepare_resume

        rd = self.run_dir(cell)
        cfg = prepare_resume(rd) if resume else cell_config(cell, self.base, rd)
        trainer = Trainer(cfg, rd, sinks=[lambda e: self.on_event(cell, e)])
        stop = StopFlag()
        try:
            with stop.installed():
                trainer.run(resume=resume, stop=stop)
        except Interrupted:
            raise KeyboardInterrupt from None  # the cell saved its checkpoint; a rerun resumes it

    def _run_subprocess(self, cell: Cell, *, resume: bool) -> None:
        from core.rundir.events import parse_event

        rd = self.run_dir(cell)
        if resume:
            args = ["resume", str(rd), "--json"]
        else:
            args = ["run", str(self.base), "--run-dir", str(rd), "--json"]
            for o in [*cell.overrides, f"run.name={cell.id[:80]}"]:
                args += ["--set", o]
        env = {**os.environ, RUNS_ENV: str(self.suite.jobs)}
        proc = subprocess.Popen([*self.runner, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                try:
                    event = parse_event(line)
                except ValueError:
                    continue
                with self._lock:
                    self.on_event(cell, event)
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.wait()  # the child saves its checkpoint on the same SIGINT
            raise
        if rc == 130:
            raise KeyboardInterrupt
        if rc != 0:
            stderr = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"cell {cell.id} failed (exit {rc}): {stderr.strip()[-500:]}")


def _timing(rd: Path) -> float | None:
    """Seconds the cell has run so far (all its sessions); None when not recorded or unreadable."""
    try:
        return float(json.loads((rd / TIMING_FILE).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_suite_dir(path: Path) -> bool:
    return (path / RESULTS_JSON).exists() or (path / CELLS_DIR).is_dir()

