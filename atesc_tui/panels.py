"""Rich views for the headless CLI: live training panels, teacher progress, summary tables.

``LivePanels.on_event`` is an event sink: it only records what the trainer emits; rich's Live
redraws from that state on its own thread, so training never waits for the terminal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"
HISTORY = 60  # points per sparkline
LOSSES = (("generator", "loss_generator"), ("kd", "loss_kd"), ("forget", "loss_forget"))


def sparkline(values: list[float] | deque[float], lo: float | None = None, hi: float | None = None) -> str:
    """Unicode block sparkline of the values; a fixed ``lo``/``hi`` keeps accuracy lines comparable."""
    vals = [v for v in values if v == v]
    if not vals:
        return ""
    lo = min(vals) if lo is None else lo
    hi = max(vals) if hi is None else hi
    span = hi - lo or 1.0
    return "".join(BARS[min(len(BARS) - 1, max(0, int((v - lo) / span * (len(BARS) - 1) + 0.5)))] for v in vals)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


class LivePanels:
    """Live panels of a run: progress/ETA, split ratio, student accuracy, losses, teacher header."""

    def __init__(self, cfg: Any, run_dir: Path, console: Console | None = None) -> None:
        from core.rundir.history import RunHistory

        self.cfg = cfg
        self.run_dir = run_dir
        self.console = console or Console()
        self.history = RunHistory()  # the same fold of events every other view uses
        self.message = "starting"
        self.samples_per_s: float | None = None  # smoothed for display
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, auto_refresh=False,
        )
        self.task = self.progress.add_task("train", total=cfg.dfkd.iterations, rate="")
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)

    # rich calls this on every refresh
    def __rich__(self) -> Group:
        return self.render()

    def __enter__(self) -> LivePanels:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)  # type: ignore[arg-type]

    def on_teacher_progress(self, p: Any) -> None:
        self.message = f"training teacher: epoch {p.epoch}/{p.epochs}, loss {p.loss:.3f}"

    def on_event(self, event: Any) -> None:
        self.history.ingest([event])
        kind = event.kind
        if kind == "start":
            self.progress.update(self.task, total=event.iterations, completed=event.step)
            self.message = f"{'resumed' if event.resumed else 'started'} on {event.device}"
        elif kind == "train":
            rate = event.samples_per_s
            self.samples_per_s = rate if self.samples_per_s is None else 0.9 * self.samples_per_s + 0.1 * rate
            self.progress.update(self.task, completed=event.step, rate=f"{self.samples_per_s:,.0f} samples/s")
        elif kind == "checkpoint":
            self.message = f"checkpoint at step {event.step}"
        elif kind == "status":
            self.message = event.message or event.status
        elif kind == "error":
            self.message = f"error: {event.message}"

    def _recent(self, name: str) -> list[float]:
        return list(self.history.series[name].y[-HISTORY:])

    def render(self) -> Group:
        cfg, hist = self.cfg, self.history
        header = Text.assemble(
            (f"{self.run_dir.name}", "bold"),
            f"  teacher {cfg.teacher.kind} ({cfg.data.id_domain} -> {cfg.data.ood_domain})  ",
            ("ID ", "dim"), _fmt(hist.teacher_acc_id), ("  OOD ", "dim"), _fmt(hist.teacher_acc_ood),
            f"  |  {cfg.dfkd.method.upper()} + ATEsc {'on' if cfg.atesc.enabled else 'off'}",
        )
        split = Table.grid(padding=(0, 1))
        last_split = hist.split_id_ratio
        split.add_row("ID-like (fragile)", _fmt(last_split, ".2f"), sparkline(self._recent("split_id_ratio"), 0.0, 1.0))
        split.add_row("OOD-like (robust)", _fmt(None if last_split is None else 1 - last_split, ".2f"))
        acc_id, acc_ood = hist.series["student_acc_id"], hist.series["student_acc_ood"]
        acc = Table.grid(padding=(0, 1))
        acc.add_row("", "now", "best", "")
        acc.add_row("ID", _fmt(acc_id.last), _fmt(acc_id.best), sparkline(self._recent("student_acc_id"), 0.0, 1.0))
        acc.add_row("OOD", _fmt(acc_ood.last), _fmt(acc_ood.best), sparkline(self._recent("student_acc_ood"), 0.0, 1.0))
        losses = Table.grid(padding=(0, 1))
        for label, name in LOSSES:
            values = self._recent(name)
            losses.add_row(label, _fmt(values[-1] if values else None, ".4f"), sparkline(values))
        row = Table.grid(expand=True)
        row.add_column(ratio=1)
        row.add_column(ratio=1)
        row.add_column(ratio=1)
        row.add_row(Panel(split, title="split ratio"), Panel(acc, title="student accuracy"),
                    Panel(losses, title="losses"))
        return Group(header, self.progress, row, Text(self.message, style="dim"))


def summary_table(run_dir: Path) -> Table:
    """Final numbers of a run, read back from its events (the same source every view uses)."""
    from core.rundir.summary import summarize_run

    s = summarize_run(run_dir)
    table = Table(title=f"run {run_dir}")
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("status", s.status), ("step", f"{s.step}/{s.iterations}"),
        ("teacher ID / OOD acc", f"{_fmt(s.teacher_acc_id)} / {_fmt(s.teacher_acc_ood)}"),
        ("student ID / OOD acc", f"{_fmt(s.student_acc_id)} / {_fmt(s.student_acc_ood)}"),
        ("best student ID acc", _fmt(s.best_acc_id)), ("ID-like split ratio", _fmt(s.split_id_ratio, ".2f")),
    ]
    for k, v in rows:
        table.add_row(k, str(v))
    return table


def runs_table(summaries: list[Any], root: Path) -> Table:
    table = Table(title=f"runs in {root}")
    for col in ("run", "teacher", "method", "ATEsc", "status", "step", "ID acc", "best ID", "OOD acc", "split"):
        table.add_column(col)
    for s in summaries:
        table.add_row(s.name, s.teacher_kind or "–", s.method or "–", "on" if s.atesc else "off", s.status,
                      f"{s.step}/{s.iterations or '?'}", _fmt(s.student_acc_id), _fmt(s.best_acc_id),
                      _fmt(s.student_acc_ood), _fmt(s.split_id_ratio, ".2f"))
    return table


def teacher_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"{record['kind']} teacher ({record['arch']})")
    for col in ("domain", "role", "accuracy"):
        table.add_column(col)
    table.add_row(record["id_domain"], "ID", f"{record['teacher_acc_id']:.4f}")
    table.add_row(record["ood_domain"], "OOD", f"{record['teacher_acc_ood']:.4f}")
    if record.get("path"):
        table.caption = f"saved: {record['path']}"
    return table


@contextmanager
def teacher_progress(console: Console) -> Iterator[Callable[[Any], None]]:
    """A progress bar over teacher training steps, fed by ``core.teachers.train``'s progress callback."""
    with Progress(TextColumn("[bold]teacher"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("teacher", total=None, info="")

        def update(p: Any) -> None:
            progress.update(task, total=p.steps, completed=p.step, info=f"epoch {p.epoch}/{p.epochs} loss {p.loss:.3f}")

        yield update
