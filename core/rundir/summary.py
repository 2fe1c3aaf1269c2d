"""Run directories seen from outside: one-line summaries and metric histories built from events.

Shared by ``atesc runs`` and the Textual app. Everything here is read-only and incremental:
``summarize_run`` keeps an :class:`~core.rundir.events.EventTail` per run directory and only parses the
bytes appended since the last call, so refreshing a table of many runs every second stays cheap.
"""

from __future__ import annotations

import threading
import tomllib
from array import array
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.rundir.events import EVENTS_FILE, Event, EventTail
from core.rundir import CHECKPOINT_DIR, CONFIG_FILE, LOCK_FILE, read_lock

SERIES_TRAIN = ("split_id_ratio", "split_ood_ratio", "loss_generator", "loss_kd", "loss_forget", "samples_per_s")
SERIES_EVAL = ("student_acc_id", "student_acc_ood")


class RunSummary(BaseModel):
    """What a table of runs shows about one run directory."""

    name: str
    path: Path
    teacher_kind: str = "?"
    method: str = "?"
    atesc: bool | None = None
    status: str = Field("new", description="last status event; 'stale' when 'running' but no live owner")
    step: int = 0
    iterations: int | None = None
    student_acc_id: float | None = None
    student_acc_ood: float | None = None
    best_acc_id: float | None = None
    split_id_ratio: float | None = None
    teacher_acc_id: float | None = None
    teacher_acc_ood: float | None = None
    samples_per_s: float | None = None
    alive: bool = False
    pid: int | None = None
    updated: float = 0.0
    error: str | None = None
    skipped: int = Field(0, description="malformed event lines skipped")
    checkpoints: int = 0

    @property
    def progress(self) -> float | None:
        if not self.iterations:
            return None
        return min(1.0, self.step / self.iterations)


class _Accumulator:
    """Folds events into the fields of a summary."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.raw_status: str | None = None
        self.started = False

    def feed(self, events: list[Event]) -> None:
        f = self.fields
        for ev in events:
            kind = ev.kind
            if kind == "train":
                f["step"] = max(f.get("step", 0), ev.step)
                f["split_id_ratio"] = ev.split_id_ratio
                f["samples_per_s"] = ev.samples_per_s
            elif kind == "eval":
                f["step"] = max(f.get("step", 0), ev.step)
                f["student_acc_id"] = ev.student_acc_id
                f["student_acc_ood"] = ev.student_acc_ood
                best = f.get("best_acc_id")
                f["best_acc_id"] = ev.student_acc_id if best is None else max(best, ev.student_acc_id)
                if ev.teacher_acc_id is not None:
                    f["teacher_acc_id"] = ev.teacher_acc_id
                if ev.teacher_acc_ood is not None:
                    f["teacher_acc_ood"] = ev.teacher_acc_ood
            elif kind == "start":
                self.started = True
                f.update(teacher_kind=ev.teacher_kind, method=ev.method, atesc=ev.atesc, iterations=ev.iterations)
                f["step"] = max(f.get("step", 0), ev.step)
                if self.raw_status in (None, "interrupted", "failed", "done", "paused"):
                    self.raw_status = "running"
                f["error"] = None
            elif kind == "status":
                self.raw_status = ev.status
                if ev.step:
                    f["step"] = max(f.get("step", 0), ev.step)
                if ev.status == "failed" and ev.message and not f.get("error"):
                    f["error"] = ev.message
            elif kind == "error":
                f["error"] = ev.message
            elif kind == "checkpoint":
                f["step"] = max(f.get("step", 0), ev.step)
            f["updated"] = max(f.get("updated", 0.0), ev.t)


class _CacheEntry:
    def __init__(self, run_dir: Path) -> None:
        self.tail = EventTail(run_dir / EVENTS_FILE)
        self.acc = _Accumulator()
        self.key: tuple[int, int] | None = None
        self.config_key: tuple[int, int] | None = None
        self.config_fields: dict[str, Any] = {}


_CACHE: dict[Path, _CacheEntry] = {}
_LOCK = threading.Lock()


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _config_fields(run_dir: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Any] = {}
    try:
        out["teacher_kind"] = data["teacher"]["kind"]
    except (KeyError, TypeError):
        pass
    try:
        out["method"] = data["dfkd"]["method"]
        out["iterations"] = int(data["dfkd"]["iterations"])
    except (KeyError, TypeError, ValueError):
        pass
    try:
        out["atesc"] = bool(data["atesc"]["enabled"])
    except (KeyError, TypeError):
        pass
    return out


def _count_checkpoints(run_dir: Path) -> int:
    try:
        return sum(1 for p in (run_dir / CHECKPOINT_DIR).iterdir() if p.suffix == ".safetensors")
    except OSError:
        return 0


def summarize_run(run_dir: Path) -> RunSummary:
    """Summary of one run directory; only new bytes of ``events.jsonl`` are parsed on repeated calls."""
    run_dir = Path(run_dir)
    key_path = run_dir.resolve()
    with _LOCK:
        entry = _CACHE.get(key_path)
        if entry is None:
            entry = _CACHE[key_path] = _CacheEntry(run_dir)
        key = _stat_key(run_dir / EVENTS_FILE)
        if key != entry.key:
            if key is not None and entry.key is not None and key[0] < entry.key[0]:
                entry.tail = EventTail(run_dir / EVENTS_FILE)  # truncated or replaced: start over
                entry.acc = _Accumulator()
            while True:
                events = entry.tail.poll()
                if not events:
                    break
                entry.acc.feed(events)
            entry.key = key
        ckey = _stat_key(run_dir / CONFIG_FILE)
        if ckey != entry.config_key:
            entry.config_fields = _config_fields(run_dir)
            entry.config_key = ckey
        fields = dict(entry.config_fields)
        fields.update({k: v for k, v in entry.acc.fields.items() if v is not None or k == "error"})
        raw_status = entry.acc.raw_status
        skipped = entry.tail.skipped

    lock = read_lock(run_dir)
    alive = lock is not None and lock.alive
    status = raw_status or ("running" if alive else "new")
    if status == "running" and not alive:
        status = "failed" if fields.get("error") else "stale"
    updated = fields.pop("updated", 0.0)
    if not updated:
        try:
            updated = run_dir.stat().st_mtime
        except OSError:
            updated = 0.0
    return RunSummary(
        name=run_dir.name,
        path=run_dir,
        status=status,
        alive=alive,
        pid=lock.pid if lock is not None and alive else None,
        updated=updated,
        skipped=skipped,
        checkpoints=_count_checkpoints(run_dir),
        **fields,
    )


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in (EVENTS_FILE, CONFIG_FILE, LOCK_FILE, "stdout.log"))


def list_runs(runs_root: Path) -> list[RunSummary]:
    """Summaries of every run directory directly under ``runs_root``, newest first."""
    runs_root = Path(runs_root)
    try:
        children = [p for p in runs_root.iterdir() if is_run_dir(p)]
    except OSError:
        return []
    summaries = [summarize_run(p) for p in children]
    summaries.sort(key=lambda s: (s.updated, s.name), reverse=True)
    return summaries


def forget_cache() -> None:
    """Drop every cached reader (tests, or after deleting run directories)."""
    with _LOCK:
        _CACHE.clear()


class Series:
    """A growable float series (x = step, y = value) stored in compact arrays."""

    __slots__ = ("x", "y")

    def __init__(self) -> None:
        self.x = array("d")
        self.y = array("d")

    def append(self, x: float, y: float) -> None:
        self.x.append(x)
        self.y.append(y)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def last(self) -> float | None:
        return self.y[-1] if self.y else None


class RunHistory:
    """Every metric of a run over steps, plus the latest of everything else, folded from events."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {name: Series() for name in (*SERIES_TRAIN, *SERIES_EVAL)}
        self.start: Event | None = None
        self.status: str | None = None
        self.status_message: str = ""
        self.error: Event | None = None
        self.step = 0
        self.iterations: int | None = None
        self.teacher_acc_id: float | None = None
        self.teacher_acc_ood: float | None = None
        self.samples_png: str | None = None
        self.last_checkpoint: str | None = None
        self.n_events = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.step_times: list[tuple[float, int]] = []  # (t, step) of recent train events for ETA

    def ingest(self, events: list[Event]) -> None:
        series = self.series
        for ev in events:
            self.n_events += 1
            kind = ev.kind
            if kind == "train":
                s = ev.step
                series["split_id_ratio"].append(s, ev.split_id_ratio)
                series["split_ood_ratio"].append(s, ev.split_ood_ratio)
                series["loss_generator"].append(s, ev.loss_generator)
                series["loss_kd"].append(s, ev.loss_kd)
                series["loss_forget"].append(s, ev.loss_forget)
                series["samples_per_s"].append(s, ev.samples_per_s)
                self.step = max(self.step, s)
                self.step_times.append((ev.t, s))
                if len(self.step_times) > 64:
                    del self.step_times[:32]
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
                self.start = ev
                self.iterations = ev.iterations
                self.status = "running"
                self.error = None
                self.step_times.clear()
            elif kind == "status":
                self.status = ev.status
                self.status_message = ev.message
            elif kind == "error":
                self.error = ev
            elif kind == "checkpoint":
                self.last_checkpoint = ev.path
            if self.first_t is None:
                self.first_t = ev.t
            self.last_t = ev.t

    @property
    def samples_per_s(self) -> float | None:
        return self.series["samples_per_s"].last

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
    def load(cls, run_dir: Path) -> tuple[RunHistory, int]:
        """History of a whole events file and the number of malformed lines skipped."""
        hist = cls()
        tail = EventTail(Path(run_dir) / EVENTS_FILE)
        while True:
            events = tail.poll()
            if not events:
                break
            hist.ingest(events)
        return hist, tail.skipped
