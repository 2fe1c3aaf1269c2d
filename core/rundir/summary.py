"""Run directories seen from outside: one-line summaries for ``atesc runs`` and the Textual app.

Everything here is read-only and incremental: ``summarize_run`` keeps an
:class:`~core.rundir.events.EventTail` and a :class:`~core.rundir.history.RunHistory` (evaluation
series only) per run directory and only parses the bytes appended since the last call, so
refreshing a table of many runs every second stays cheap. The events are folded by the same
``RunHistory`` every other view uses (last event per step, resume-safe).
"""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.rundir import CHECKPOINT_DIR, CONFIG_FILE, LOCK_FILE, STDOUT_LOG, read_lock
from core.rundir.events import EVENTS_FILE, EventTail
from core.rundir.history import RunHistory


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


class _CacheEntry:
    def __init__(self, run_dir: Path) -> None:
        self.tail = EventTail(run_dir / EVENTS_FILE)
        self.history = RunHistory(train_series=False)
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


def _history_fields(hist: RunHistory) -> dict[str, Any]:
    """The summary's fields known from events (they override the config's)."""
    fields: dict[str, Any] = {"step": hist.step, "error": hist.error_message, "updated": hist.last_t or 0.0}
    if hist.start is not None:
        start = hist.start
        fields.update(teacher_kind=start.teacher_kind, method=start.method, atesc=start.atesc,
                      iterations=start.iterations)
    acc_id, acc_ood = hist.series["student_acc_id"], hist.series["student_acc_ood"]
    optional = {
        "student_acc_id": acc_id.last, "student_acc_ood": acc_ood.last, "best_acc_id": acc_id.best,
        "split_id_ratio": hist.split_id_ratio, "samples_per_s": hist.samples_per_s,
        "teacher_acc_id": hist.teacher_acc_id, "teacher_acc_ood": hist.teacher_acc_ood,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    return fields


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
                entry.history = RunHistory(train_series=False)
            while events := entry.tail.poll():
                entry.history.ingest(events)
            entry.key = key
        ckey = _stat_key(run_dir / CONFIG_FILE)
        if ckey != entry.config_key:
            entry.config_fields = _config_fields(run_dir)
            entry.config_key = ckey
        fields = dict(entry.config_fields)
        fields.update(_history_fields(entry.history))
        raw_status = entry.history.status
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
    return path.is_dir() and any((path / f).exists() for f in (EVENTS_FILE, CONFIG_FILE, LOCK_FILE, STDOUT_LOG))


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
