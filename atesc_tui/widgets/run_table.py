"""The table of runs: one row per run directory, updated in place.

Below 100 columns the teacher and method columns are left out and long run names lose their
middle (the timestamp at the end is what tells runs apart), so status, accuracy and the split
stay on screen at 80x24. The cursor stays on its run when rows are added or re-ordered.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from core.rundir.summary import RunSummary

COLUMNS = (
    ("name", "Run"),
    ("teacher", "Teacher"),
    ("method", "DFKD"),
    ("atesc", "ATEsc"),
    ("status", "Status"),
    ("step", "Step"),
    ("acc_id", "ID acc"),
    ("acc_ood", "OOD acc"),
    ("split", "Fragile"),
)
WIDE_ONLY = ("teacher", "method")
NARROW_BELOW = 100  # terminal columns

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


def middle_ellipsis(text: str, width: int) -> str:
    if len(text) <= width or width < 5:
        return text
    tail = min(len(text) // 2, (width - 1) * 2 // 3)
    return text[: width - 1 - tail] + "…" + text[-tail:]


def row_cells(s: RunSummary) -> dict[str, object]:
    step = f"{s.step}/{s.iterations}" if s.iterations else str(s.step)
    atesc = "-" if s.atesc is None else ("on" if s.atesc else "off")
    status = Text(s.status, style=STATUS_STYLE.get(s.status, ""))
    if s.atesc is False:
        split = Text("n/a", style="dim")
    else:
        split = "-" if s.split_id_ratio is None else f"{100 * s.split_id_ratio:.0f}%"
    return {
        "name": s.name,
        "teacher": s.teacher_kind,
        "method": s.method,
        "atesc": atesc,
        "status": status,
        "step": step,
        "acc_id": _pct(s.student_acc_id),
        "acc_ood": _pct(s.student_acc_ood),
        "split": split,
    }


class RunTable(DataTable):
    """Rows keyed by run directory path; ``update_runs`` adds, updates and removes rows."""

    DEFAULT_CSS = """
    RunTable { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.summaries: dict[str, RunSummary] = {}
        self.marked: set[str] = set()
        self.columns_shown: tuple[str, ...] = ()

    def on_mount(self) -> None:
        self._layout_columns(self.app.size.width)

    def on_resize(self) -> None:
        runs, selected = list(self.summaries.values()), self.current_key
        if self._layout_columns(self.size.width or self.app.size.width):
            self.update_runs(runs, force=True, selected=selected)

    def _layout_columns(self, width: int) -> bool:
        """Choose the columns for ``width``; True if they changed (the rows are then cleared)."""
        keys = tuple(k for k, _ in COLUMNS if width >= NARROW_BELOW or k not in WIDE_ONLY)
        if keys == self.columns_shown:
            return False
        self.clear(columns=True)
        for k, label in COLUMNS:
            if k in keys:
                self.add_column(label, key=k)
        self.summaries = {}
        self.columns_shown = keys
        return True

    def _name_width(self, cells: list[dict[str, object]]) -> int:
        """Room left for the run name once every other column has its content's width."""
        labels = dict(COLUMNS)
        used = sum(
            max(len(labels[k]), *(Text(c[k]).cell_len if isinstance(c[k], str) else c[k].cell_len for c in cells)) + 2
            for k in self.columns_shown
            if k != "name"
        )
        return max(12, (self.size.width or self.app.size.width) - used - 3 - 2 - 2)  # mark label, padding, scrollbar

    def update_runs(self, summaries: list[RunSummary], force: bool = False, selected: str | None = None) -> None:
        selected = selected or self.current_key
        new = {str(s.path): s for s in summaries}
        for key in list(self.summaries):
            if key not in new:
                self.remove_row(key)
                self.marked.discard(key)
        all_cells = {key: row_cells(s) for key, s in new.items()}
        name_width = self._name_width(list(all_cells.values())) if all_cells else 0
        for key, s in new.items():
            cells = all_cells[key]
            cells["name"] = middle_ellipsis(s.name, name_width)
            if key in self.summaries:
                if force or self.summaries[key] != s:
                    for col in self.columns_shown:
                        self.update_cell(key, col, cells[col])
            else:
                self.add_row(*(cells[c] for c in self.columns_shown), key=key, label=self._mark(key))
        self.summaries = new
        order = list(new)
        if [row.key.value for row in self.ordered_rows] != order:
            rank = {self.get_cell(key, "name"): i for i, key in enumerate(order)}
            self.sort("name", key=lambda name: rank.get(name, 0))
        self._restore_cursor(selected)

    def _restore_cursor(self, key: str | None) -> None:
        """Keep the cursor on the run it was on (rows above it may have appeared or moved)."""
        if key is None or key not in self.rows:
            return
        row = self.get_row_index(key)
        if row != self.cursor_row:
            self.move_cursor(row=row, animate=False, scroll=False)

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
