"""``atesc bench``, ``atesc report`` and ``atesc diagnose`` (registered on the main Typer app)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from atesc_tui.cli_common import EXIT_INTERRUPTED, SetOpt, app, err, out, user_errors


@app.command()
def bench(
    suite_file: Annotated[Path, typer.Argument(help="Suite TOML (e.g. presets/bench/offline.toml)")],
    only: Annotated[Optional[str], typer.Option("--only", help="Run only cells whose id matches (glob, comma-separated)")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Suite directory (default runs/bench/<suite name>)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells and their state, run nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per finished cell, then the results")] = False,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, max=64,
                                                help="Cells at once (overrides the suite's jobs; they divide the cores)")] = None,
) -> None:
    """Run a benchmark suite grid (teacher x method x ATEsc x seed); finished cells are skipped."""
    with user_errors():
        from core.presets import resolve_preset
        from core.experiments.bench import Bench, select, summarize_cell

        path = suite_file if suite_file.exists() else resolve_preset(str(suite_file))
        b = Bench.from_file(path, out_dir, runner=[sys.executable, "-m", "atesc_tui.cli"])
        if jobs is not None:
            b.suite.jobs = jobs
        cells = select(b.cells, only)
        if not cells:
            from core.errors import BadInput

            raise BadInput(f"no cell matches {only!r}", field="--only")
        b.configs(cells)
        if dry_run:
            for c in cells:
                state = b.state_of(c)
                line = {"id": c.id, "state": state, "run_dir": str(b.run_dir(c)), "overrides": c.overrides}
                sys.stdout.write(json.dumps(line) + "\n") if as_json else out.print(f"{state:7s} {c.id}", markup=False)
            return
        totals = {c.id: cfg.dfkd.iterations for c, cfg in zip(cells, b.configs(cells))}
        done_before = {c.id: summarize_cell(c, b.run_dir(c), 1).step if b.state_of(c) != "fresh" else 0 for c in cells}
        if as_json:
            def on_cell(cell: Any, state: str) -> None:
                if state in ("done", "skipped"):
                    r = summarize_cell(cell, b.run_dir(cell), b.suite.last_evals)
                    sys.stdout.write(json.dumps({"cell": cell.id, "state": state, **r.model_dump(mode="json")}) + "\n")
                    sys.stdout.flush()

            b.on_cell = on_cell
            try:
                payload = b.run(only)
            except KeyboardInterrupt:
                err.print(f"interrupted; rerun `atesc bench {suite_file}` to continue", markup=False)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            sys.stdout.write(json.dumps({"groups": payload["groups"], "comparisons": payload["comparisons"]}) + "\n")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=out)
        overall = progress.add_task("suite", total=sum(totals.values()), completed=sum(done_before.values()))
        tasks: dict[str, Any] = {}  # cell id -> progress task of a running cell
        steps: dict[str, int] = {}

        def on_cell_rich(cell: Any, state: str) -> None:
            if state == "skipped":
                progress.console.print(f"skip   {cell.id} (done)", markup=False)
                progress.update(overall, advance=totals[cell.id] - done_before[cell.id])
                return
            if state in ("started", "resumed"):
                tasks[cell.id] = progress.add_task(f"{cell.id}", total=totals[cell.id], completed=done_before[cell.id])
                steps[cell.id] = done_before[cell.id]
                return
            task = tasks.pop(cell.id, None)
            if task is not None:
                progress.remove_task(task)
            r = summarize_cell(cell, b.run_dir(cell), b.suite.last_evals)
            acc = f"ID {r.acc_id:.3f} OOD {r.acc_ood:.3f}" if r.acc_id is not None else "no eval"
            progress.console.print(f"done   {cell.id}: {acc}", markup=False)

        def on_event(cell: Any, event: Any) -> None:
            if event.kind == "train" and cell.id in tasks:
                delta = event.step - steps[cell.id]
                steps[cell.id] = event.step
                progress.update(tasks[cell.id], completed=event.step)
                progress.update(overall, advance=max(delta, 0))

        b.on_cell, b.on_event = on_cell_rich, on_event
        try:
            with progress:
                b.run(only)
        except KeyboardInterrupt:
            err.print(f"interrupted; rerun `atesc bench {suite_file}` to continue (the cell resumes from its checkpoint)",
                      markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        out.print((b.suite_dir / "results.md").read_text(), markup=False)
        out.print(f"results: {b.suite_dir / 'results.md'}", markup=False)


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A run directory or a bench suite directory")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Where to write the PNGs (default: in PATH)")] = None,
    steps: Annotated[Optional[str], typer.Option("--steps", help="Steps for the fragile/robust sample grids, e.g. 50,150")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the written files as JSON")] = False,
) -> None:
    """Draw PNG figures (curves, suite bars, fragile/robust sample grids) for a run or a suite."""
    with user_errors():
        from core.errors import BadInput
        from core.experiments.report import report as draw

        wanted = None
        if steps:
            try:
                wanted = [int(s) for s in steps.split(",") if s.strip()]
            except ValueError:
                raise BadInput("expected comma-separated integers", field="--steps") from None
        files = draw(path, out_dir, wanted)
        if as_json:
            sys.stdout.write(json.dumps({"files": [str(f) for f in files]}) + "\n")
        else:
            for f in files:
                out.print(str(f), markup=False)


@app.command()
def diagnose(
    preset: Annotated[str, typer.Argument(help="Preset TOML file or built-in name")],
    sets: SetOpt = None,
    kinds: Annotated[Optional[str], typer.Option("--kinds", help="Teacher kinds, comma-separated (default: all)")] = None,
    samples: Annotated[int, typer.Option("--samples", min=10, help="Real test images per domain")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per teacher kind")] = False,
) -> None:
    """AUROC of the ATEsc robustness score on real ID vs real OOD images, per teacher kind."""
    with user_errors():
        from core.config import load_config
        from core.experiments.diagnostics import score_auroc
        from core.presets import resolve_preset

        from core.registry import plugin_names

        rows = []
        for kind in [k.strip() for k in kinds.split(",") if k.strip()] if kinds else plugin_names("core.teachers.kinds"):
            cfg = load_config(resolve_preset(preset), [*(sets or []), f"teacher.kind={kind}"])
            row = score_auroc(cfg, samples=samples)
            rows.append(row)
            if as_json:
                sys.stdout.write(row.model_dump_json() + "\n")
                sys.stdout.flush()
        if not as_json:
            from rich.table import Table

            table = Table(title=f"ATEsc score on real images ({rows[0].score}, eps {rows[0].eps}, {rows[0].steps} step(s))"
                          if rows else "ATEsc score")
            for col in ("teacher", "teacher ID/OOD", "AUROC (ID fragile)", "flip ID", "flip OOD"):
                table.add_column(col)
            for r in rows:
                table.add_row(r.teacher_kind, f"{r.teacher_acc_id:.3f} / {r.teacher_acc_ood:.3f}", f"{r.auroc:.3f}",
                              f"{r.flip_rate_id:.2f}", f"{r.flip_rate_ood:.2f}")
            out.print(table)
