"""Watch one run: charts, header, samples, event tail, error panel. Attaches to any run directory.

A thread reads ``events.jsonl`` incrementally in bounded chunks and folds the events into a
:class:`RunHistory` under a lock; the UI copies what it needs a few times a second, so input
handling never waits for parsing, however fast the file grows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import get_current_worker

from core.rundir.events import EVENTS_FILE, EventTail
from core.rundir import STDOUT_LOG, read_lock
from core.rundir.history import RunHistory
from atesc_tui.widgets.error_panel import ErrorPanel
from atesc_tui.widgets.event_log import EventLog, format_event
from atesc_tui.widgets.metric_chart import MetricChart
from atesc_tui.widgets.run_header import RunHeader
from atesc_tui.widgets.sample_view import SampleView

CHUNK_BYTES = 256 << 10  # parse at most this much per poll, then let the UI breathe
CHARTS = (
    ("chart-split", "ID/OOD split ratio", (("ID (fragile)", "split_id_ratio"), ("OOD (robust)", "split_ood_ratio")), (0.0, 1.0)),
    ("chart-acc", "student accuracy", (("ID", "student_acc_id"), ("OOD", "student_acc_ood")), (0.0, 1.0)),
    ("chart-gen", "generator loss", (("generator", "loss_generator"),), None),
    ("chart-kd", "KD / forgetting loss", (("KD", "loss_kd"), ("forget", "loss_forget")), None),
)


class RunReader:
    """Background tail of one run's events into a RunHistory (thread-safe snapshotting)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.tail = EventTail(run_dir / EVENTS_FILE)
        self.history = RunHistory()
        self.lock = threading.Lock()
        self.log_lines: deque[str] = deque(maxlen=200)
        self.version = 0  # bumped on every ingested batch
        self.ingested = 0

    def poll_once(self) -> int:
        events = self.tail.poll(CHUNK_BYTES)
        if not events:
            return 0
        lines = [format_event(ev) for ev in events[-200:]]
        with self.lock:
            self.history.ingest(events)
            self.log_lines.extend(lines)
            self.ingested += len(events)
            self.version += 1
        return len(events)

    def snapshot(self, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        with self.lock:
            return {n: (np.array(self.history.series[n].x), np.array(self.history.series[n].y)) for n in names}

    def take_log(self) -> list[str]:
        with self.lock:
            lines = list(self.log_lines)
            self.log_lines.clear()
        return lines


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("1", "tab('tab-charts')", "Charts", show=False),
        Binding("2", "tab('tab-samples')", "Samples/log", show=False),
    ]

    CHART_FPS = 2.0  # chart redraws per second at most (only while the charts tab is shown)
    POLL_S = 0.1
    LOG_LINES_PER_TICK = 60  # a flood of events shows its latest lines only

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.reader = RunReader(self.run_dir)
        self._seen_version = -1
        self._charted_version = -1
        self._last_chart = 0.0
        self.alive = False

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield ErrorPanel(id="error-panel")
        with TabbedContent(id="monitor-tabs"):
            with TabPane("Charts", id="tab-charts"):
                with Grid(id="chart-grid"):
                    for cid, title, _, yr in CHARTS:
                        yield MetricChart(title, y_range=yr, id=cid)
            with TabPane("Samples & log", id="tab-samples"):
                with Horizontal():
                    yield SampleView(id="samples")
                    yield EventLog(id="event-log")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"monitor: {self.run_dir.name}"
        self._tail_worker()
        self.set_interval(0.25, self.refresh_view)
        self.refresh_view()

    @work(thread=True, exclusive=True, group="tail")
    def _tail_worker(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            if self.reader.poll_once() == 0:
                time.sleep(self.POLL_S)
            else:
                time.sleep(0.002)  # hand the GIL to the UI between chunks

    def refresh_view(self, force_charts: bool = False) -> None:
        reader = self.reader
        lock = read_lock(self.run_dir)
        launcher = getattr(self.app, "launcher", None)
        # a process we launched counts as the owner too (before it takes the lock, after it drops it)
        self.alive = (lock is not None and lock.alive) or bool(launcher is not None and launcher.running(self.run_dir))
        version = reader.version
        hist = reader.history
        with reader.lock:
            self.query_one(RunHeader).show(self.run_dir.name, hist, reader.tail.skipped, self.alive)
            error = hist.error
            status = hist.status
            samples = hist.samples_png
            message = hist.status_message
        panel = self.query_one(ErrorPanel)
        if error is not None:
            panel.show_error(error.message, error.traceback)
        elif status == "failed":
            panel.show_error(message or "the trainer failed", log_tail=self._log_tail())
        elif (rc := self._exit_code()) not in (None, 0, 130) and status not in ("done", "interrupted"):
            panel.show_error(f"the trainer exited with code {rc}", log_tail=self._log_tail())
        else:
            panel.clear()
        active = self.query_one(TabbedContent).active
        if active == "tab-samples" or force_charts:
            lines = reader.take_log()
            if lines:
                self.query_one(EventLog).add_lines(lines[-self.LOG_LINES_PER_TICK :])
            if samples:
                self.query_one(SampleView).show(self.run_dir / samples)
        now = time.monotonic()
        # while events flood in (catching up on a big file), redraw the charts half as often
        flooding = version - self._charted_version > 4
        due = now - self._last_chart >= (2.0 if flooding else 1.0) / self.CHART_FPS
        if version != self._charted_version and (force_charts or (active == "tab-charts" and due)):
            self.update_charts()
            self._charted_version = version
            self._last_chart = now
        self._seen_version = version

    def update_charts(self) -> None:
        names = [n for _, _, series, _ in CHARTS for _, n in series]
        data = self.reader.snapshot(names)
        for cid, _, series, _ in CHARTS:
            self.query_one(f"#{cid}", MetricChart).set_series([(label, *data[n]) for label, n in series])

    def _exit_code(self) -> int | None:
        launcher = getattr(self.app, "launcher", None)
        return launcher.exit_code(self.run_dir) if launcher is not None else None

    def _log_tail(self, lines: int = 12) -> str:
        for name in (STDOUT_LOG,):
            path = self.run_dir / name
            try:
                with open(path, "rb") as fh:
                    fh.seek(0, 2)
                    size = fh.tell()
                    fh.seek(max(0, size - 8192))
                    return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
            except OSError:
                continue
        return ""

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.refresh_view()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.call_after_refresh(self.refresh_view)

    def action_stop(self) -> None:
        self.app.stop_run(self.run_dir)

    def action_resume(self) -> None:
        self.app.resume_run(self.run_dir)
