"""Two or more runs overlaid on the same charts, with a table of final numbers."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from core.rundir.history import RunHistory
from core.rundir.summary import summarize_run
from atesc_tui.widgets.metric_chart import MetricChart

CHARTS = (
    ("cmp-acc-id", "student ID accuracy", "student_acc_id", (0.0, 1.0)),
    ("cmp-acc-ood", "student OOD accuracy", "student_acc_ood", (0.0, 1.0)),
    ("cmp-split", "ID split ratio", "split_id_ratio", (0.0, 1.0)),
    ("cmp-gen", "generator loss", "loss_generator", None),
)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


class CompareScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.run_dirs = [Path(p) for p in run_dirs]

    def compose(self) -> ComposeResult:
        yield Header()
        with Grid(id="compare-grid"):
            for cid, title, _, yr in CHARTS:
                yield MetricChart(title, y_range=yr, id=cid)
        yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "compare"
        self.sub_title = ", ".join(p.name for p in self.run_dirs)
        histories = []
        for p in self.run_dirs:
            hist, _ = RunHistory.load(p)
            histories.append(hist)
        for cid, _, series, _ in CHARTS:
            self.query_one(f"#{cid}", MetricChart).set_series(
                [(p.name, h.series[series].x, h.series[series].y) for p, h in zip(self.run_dirs, histories)]
            )
        table = self.query_one("#compare-table", DataTable)
        table.add_columns("Run", "Teacher", "Method", "ATEsc", "Status", "Step", "ID acc", "best ID", "OOD acc", "Split ID")
        for i, p in enumerate(self.run_dirs):
            s = summarize_run(p)
            from atesc_tui.widgets.metric_chart import PALETTE

            table.add_row(
                Text(s.name, style=PALETTE[i % len(PALETTE)].replace("orange", "dark_orange")),
                s.teacher_kind,
                s.method,
                "-" if s.atesc is None else ("on" if s.atesc else "off"),
                s.status,
                str(s.step),
                _pct(s.student_acc_id),
                _pct(s.best_acc_id),
                _pct(s.student_acc_ood),
                "-" if s.split_id_ratio is None else f"{s.split_id_ratio:.2f}",
                key=str(p),
            )
