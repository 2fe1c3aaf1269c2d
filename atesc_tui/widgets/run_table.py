"""The table of runs: one row per run directory, updated in place."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from core.rundir.summary import RunSummary

COLUMNS = (
    ("name", "Run"),
    ("teacher", "Teacher"),
    ("method", "Method"),
    ("atesc", "ATEsc"),
    ("status", "Status"),
    ("step", "Step"),
    ("acc_id", "ID acc"),
    ("acc_ood", "OOD acc"),
    ("split", "Split ID"),
)

STATUS_STYLE = {
    "running": "bold green",
    "done": "blue",
    "failed": "bold red",
    "interrupted": "yellow",
    "stale": "dim yellow",
    "paused": "yellow",
    "new": "dim",
}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def row_cells(s: RunSummary) -> tuple[object, ...]:
    step = f"{s.step}/{s.iterations}" if s.iterations else str(s.step)
    atesc = "-" if s.atesc is None else ("on" if s.atesc else "off")
    status = Text(s.status, style=STATUS_STYLE.get(s.status, ""))
    return (
        s.name,
        s.teacher_kind,
        s.method,
        atesc,
        status,
        step,
        _pct(s.student_acc_id),
        _pct(s.student_acc_ood),
        "-" if s.split_id_ratio is None else f"{s.split_id_ratio:.2f}",
    )


class RunTable(DataTable):
    """Rows keyed by run directory path; ``update_runs`` adds, updates and removes rows."""

    DEFAULT_CSS = """
    RunTable { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.summaries: dict[str, RunSummary] = {}
        self.marked: set[str] = set()

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def update_runs(self, summaries: list[RunSummary]) -> None:
        new = {str(s.path): s for s in summaries}
        for key in list(self.summaries):
            if key not in new:
                self.remove_row(key)
                self.marked.discard(key)
        for key, s in new.items():
            cells = row_cells(s)
            if key in self.summaries:
                if self.summaries[key] != s:
                    for (col, _), value in zip(COLUMNS, cells):
                        self.update_cell(key, col, value)
            else:
                self.add_row(*cells, key=key, label=self._mark(key))
        self.summaries = new
        order = [s.name for s in summaries]
        current = [self.get_cell(row.key, "name") for row in self.ordered_rows]
        if current != order:
            rank = {name: i for i, name in enumerate(order)}
            self.sort("name", key=lambda name: rank.get(name, 0))

    def _mark(self, key: str) -> str:
        return "*" if key in self.marked else " "

    def toggle_mark(self) -> str | None:
        key = self.current_key
        if key is None:
            return None
        if key in self.marked:
            self.marked.discard(key)
        else:
            self.marked.add(key)
        self.rows[RowKey(key)].label = Text(self._mark(key))
        self._update_count += 1
        self.refresh()
        return key

    @property
    def current_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - cursor out of range while rows change
            return None

    @property
    def current(self) -> RunSummary | None:
        key = self.current_key
        return self.summaries.get(key) if key else None

    def selected_paths(self) -> list[Path]:
        """Marked runs, or the one under the cursor when none is marked."""
        if self.marked:
            return [Path(k) for k in self.summaries if k in self.marked]
        cur = self.current
        return [cur.path] if cur else []
