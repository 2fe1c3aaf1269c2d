"""The home screen: every run directory under the runs root, live."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from core.rundir.summary import list_runs
from atesc_tui.widgets.run_table import RunTable


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open", priority=False),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("n", "app.new_run", "New run"),
    ]

    REFRESH_S = 1.0

    def __init__(self, runs_root: Path) -> None:
        super().__init__()
        self.runs_root = Path(runs_root)
        self._status_text = ""

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield RunTable(id="runs-table")
        yield Static("", id="runs-status")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "atesc-tui"
        self.sub_title = str(self.runs_root)
        self.refresh_runs()
        self.set_interval(self.REFRESH_S, self._tick)

    def _tick(self) -> None:
        # under another screen (monitor, compare) the table is not visible: read nothing
        if self.app.screen is self:
            self.refresh_runs()

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    @work(thread=True, exclusive=True, group="runs")
    def refresh_runs(self) -> None:
        summaries = list_runs(self.runs_root)
        self.app.call_from_thread(self._apply, summaries)

    def _apply(self, summaries) -> None:
        table = self.query_one(RunTable)
        table.update_runs(summaries)
        if not summaries:
            text = f"No runs under {self.runs_root} yet: press n to start one."
        else:
            alive = sum(s.alive for s in summaries)
            marked = len(table.marked)
            text = (
                f"{len(summaries)} runs, {alive} running"
                + (f", {marked} marked for compare" if marked else "")
                + "  (space marks, c compares; ? explains the columns)"
            )
        if text != self._status_text:  # an unchanged table costs no repaint
            self._status_text = text
            self.query_one("#runs-status", Static).update(text)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def _current(self) -> Path | None:
        cur = self.query_one(RunTable).current
        return cur.path if cur else None

    def action_open(self) -> None:
        path = self._current()
        if path is not None:
            self.app.open_monitor(path)

    def action_mark(self) -> None:
        self.query_one(RunTable).toggle_mark()
        self.refresh_runs()

    def action_compare(self) -> None:
        table = self.query_one(RunTable)
        paths = [Path(k) for k in table.summaries if k in table.marked]
        if len(paths) < 2:
            paths = [s.path for s in list(table.summaries.values())[:2]] if not paths else paths
        if len(paths) < 2:
            self.notify("Mark two or more runs with space, then press c.", severity="warning")
            return
        self.app.open_compare(paths)

    def action_stop(self) -> None:
        path = self._current()
        if path is not None:
            self.app.stop_run(path)

    def action_resume(self) -> None:
        path = self._current()
        if path is not None:
            self.app.resume_run(path)
