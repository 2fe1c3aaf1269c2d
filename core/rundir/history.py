"""The one reading of a run's event log: metric series over steps and the latest state of the run.

Every view folds events through :class:`RunHistory`: the runs table (``summary``), the TUI charts
and header, the headless rich panels, bench cells and reports. The rules live here only:

- **Last event per step.** A run resumed from its checkpoint at step ``s`` replays the steps after
  ``s`` (and a NaN rollback repeats them). Its ``start`` event at ``s`` drops everything recorded
  after ``s``, and any train or eval event at a step already recorded drops that step and the ones
  after it, so each step counts once and the series follow the trajectory the run is on.
- **Malformed lines** are skipped and counted (by :class:`~core.rundir.events.EventTail`); a
  **torn last line** (a writer killed mid-line) is held back, neither an event nor counted, since
  a live writer may still complete it. :func:`read_history` parses it if it is a whole event.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from pathlib import Path

from core.rundir.events import EVENTS_FILE, ErrorEvent, Event, EventTail, StartEvent, TrainEvent, parse_event

SERIES_TRAIN = (
    "split_id_ratio", "split_ood_ratio", "loss_generator", "loss_kd", "loss_forget", "samples_per_s", "lr_student",
)
SERIES_EVAL = ("student_acc_id", "student_acc_ood")
ETA_WINDOW = 64  # recent train events kept for the steps/s estimate


class Series:
    """A growable float series (x = step, ascending; y = value) stored in compact arrays."""

    __slots__ = ("x", "y")

    def __init__(self) -> None:
        self.x = array("d")
        self.y = array("d")

    def append(self, x: float, y: float) -> None:
        """Add a point; a step at or before the last one first drops the points from that step on."""
        if self.x and x <= self.x[-1]:
            self.truncate_after(x - 0.5)
        self.x.append(x)
        self.y.append(y)

    def truncate_after(self, step: float) -> None:
        """Drop every point with x > ``step``."""
        keep = bisect_left(self.x, step + 0.5) if self.x and self.x[-1] > step else len(self.x)
        del self.x[keep:]
        del self.y[keep:]

    def __len__(self) -> int:
        return len(self.x)

    @property
    def last(self) -> float | None:
        return self.y[-1] if self.y else None

    @property
    def best(self) -> float | None:
        """The largest value after step 0: a step-0 evaluation is the untrained model (chance),
        which an NTL-trapped student may never beat, so it is not a result."""
        return max((y for x, y in zip(self.x, self.y) if x > 0), default=None)


class RunHistory:
    """Every metric of a run over steps, plus the latest of everything else, folded from events.

    ``train_series=False`` keeps only the evaluation series (a few points per run) and the last
    train event: enough for a table row, at constant memory per run however long it trains.
    """

    def __init__(self, *, train_series: bool = True) -> None:
        self.train_series = train_series
        self.series: dict[str, Series] = {name: Series() for name in (*SERIES_TRAIN, *SERIES_EVAL)}
        self.start: StartEvent | None = None  # the latest start (a resume's, if resumed)
        self.status: str | None = None  # latest status; "running" after a start
        self.status_message: str = ""
        self.error: ErrorEvent | None = None
        self.step = 0  # furthest step of the current trajectory
        self.iterations: int | None = None
        self.teacher_acc_id: float | None = None
        self.teacher_acc_ood: float | None = None
        self.samples_png: str | None = None
        self.last_checkpoint: str | None = None
        self.last_train: TrainEvent | None = None
        self.n_events = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.step_times: list[tuple[float, int]] = []  # (t, step) of recent train events for ETA
        self.resume_steps: list[int] = []  # steps the current trajectory was resumed at (charts mark them)

    def ingest(self, events: Iterable[Event]) -> None:
        series = self.series
        for ev in events:
            self.n_events += 1
            kind = ev.kind
            if kind == "train":
                s = ev.step
                if self.train_series:
                    for name in SERIES_TRAIN:
                        value = getattr(ev, name)  # lr_student is optional: NaN (a gap) where not logged
                        series[name].append(s, math.nan if value is None else value)
                if self.step_times and s <= self.step_times[-1][1]:
                    self.step_times.clear()  # a replayed step: the rate restarts with it
                self.last_train = ev
                self.step = max(self.step, s)
                self.step_times.append((ev.t, s))
                if len(self.step_times) > ETA_WINDOW:
                    del self.step_times[: ETA_WINDOW // 2]
            elif kind == "eval":
                series["student_acc_id"].append(ev.step, ev.student_acc_id)
                series["student_acc_ood"].append(ev.step, ev.student_acc_ood)
                self.step = max(self.step, ev.step)
                if ev.teacher_acc_id is not None:
                    self.teacher_acc_id = ev.teacher_acc_id
                if ev.teacher_acc_ood is not None:
                    self.teacher_acc_ood = ev.teacher_acc_ood
                if ev.samples_png:
                    self.samples_png = ev.samples_png
            elif kind == "start":
                self._rewind(ev.step)
                if ev.resumed:
                    self.resume_steps.append(ev.step)
                self.start = ev
                self.iterations = ev.iterations
                self.status = "running"
                self.error = None
            elif kind == "status":
                self.status = ev.status
                self.status_message = ev.message
                self.step = max(self.step, ev.step)
            elif kind == "error":
                self.error = ev
            elif kind == "checkpoint":
                self.last_checkpoint = ev.path
                self.step = max(self.step, ev.step)
            if self.first_t is None:
                self.first_t = ev.t
            self.last_t = ev.t if self.last_t is None else max(self.last_t, ev.t)

    def _rewind(self, step: int) -> None:
        """A (re)start at ``step``: what was recorded after it is not on this trajectory."""
        for s in self.series.values():
            s.truncate_after(step)
        self.resume_steps = [r for r in self.resume_steps if r < step]
        if self.last_train is not None and self.last_train.step > step:
            self.last_train = None
        self.step = step
        self.step_times.clear()

    @property
    def error_message(self) -> str | None:
        """The error event's message, else a failed status's message."""
        if self.error is not None:
            return self.error.message
        if self.status == "failed" and self.status_message:
            return self.status_message
        return None

    @property
    def split_id_ratio(self) -> float | None:
        return None if self.last_train is None else self.last_train.split_id_ratio

    @property
    def samples_per_s(self) -> float | None:
        return None if self.last_train is None else self.last_train.samples_per_s

    @property
    def steps_per_s(self) -> float | None:
        st = self.step_times
        if len(st) < 2:
            return None
        (t0, s0), (t1, s1) = st[0], st[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        return (s1 - s0) / (t1 - t0)

    @property
    def eta_s(self) -> float | None:
        rate = self.steps_per_s
        if rate is None or not self.iterations:
            return None
        return max(0.0, (self.iterations - self.step) / rate)

    @classmethod
    def load(cls, run_dir: Path, *, train_series: bool = True) -> tuple[RunHistory, int]:
        """History of a whole events file and the number of malformed lines skipped."""
        return read_history(run_dir, train_series=train_series)


def read_history(run_dir: Path, *, train_series: bool = True) -> tuple[RunHistory, int]:
    """Fold ``RUN_DIR/events.jsonl`` into a history; also the number of malformed lines skipped.

    A missing or unreadable file gives an empty history. A last line without its newline counts
    if it is a whole event (nothing can complete it any more), and is ignored otherwise.
    """
    hist = RunHistory(train_series=train_series)
    tail = EventTail(Path(run_dir) / EVENTS_FILE)
    while events := tail.poll():
        hist.ingest(events)
    if tail.pending.strip():
        try:
            hist.ingest([parse_event(tail.pending)])
        except ValueError:
            pass
    return hist, tail.skipped
