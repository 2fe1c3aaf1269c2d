"""Run directory layout and the lock that says which live process owns a run.

The package holds everything that reads or writes a run directory: ``events`` (the event log),
``history`` (the one fold of an event log every view uses), ``summary`` (runs table),
``checkpoint``, ``safefile`` (atomic writes, safe reads) and ``faults`` (fault-injection hooks).
This module imports none of them.

```
<run>/config.toml            resolved config
<run>/events.jsonl           append-only event stream
<run>/checkpoints/*.safetensors, checkpoints/latest (name of the newest)
<run>/teacher.json           reference to the teacher file and its accuracies
<run>/samples/step-XXXXXXXX.png  synthetic sample grids (-fragile / -robust: ATEsc's split)
<run>/report.png             curves (atesc report)
<run>/run.lock               {"pid", "host", "started"} while a process owns the run
<run>/stdout.log             the trainer's output when the app started it
```
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.errors import RunLocked

CONFIG_FILE = "config.toml"
LOCK_FILE = "run.lock"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
TEACHER_REF = "teacher.json"
STDOUT_LOG = "stdout.log"  # a trainer's output, when the app (launcher) started it
SAMPLE_GROUPS = ("fragile", "robust")  # ATEsc's split of a sample grid
_SAMPLE_NAME = re.compile(r"step-(\d{8})(?:-(fragile|robust))?\.png$")


def sample_file(step: int, group: str | None = None) -> str:
    """``samples/step-00000042.png`` (or ``...-fragile.png`` / ``...-robust.png``), relative to the run."""
    return f"{SAMPLES_DIR}/step-{step:08d}{'' if group is None else '-' + group}.png"


def parse_sample_file(name: str) -> tuple[int, str | None] | None:
    """(step, group or None) of a sample grid's file name; None for any other name."""
    m = _SAMPLE_NAME.search(name)
    return None if m is None else (int(m.group(1)), m.group(2))


def new_run_dir(runs_root: Path, name: str) -> Path:
    """``<runs_root>/<name>-<timestamp>``, made unique with a suffix if two runs start in one second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = runs_root / f"{name}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


@dataclass(frozen=True)
class LockInfo:
    pid: int
    host: str
    started: float

    @property
    def alive(self) -> bool:
        """True when the owner is a live process on this host (another host's lock counts as alive)."""
        if self.host != socket.gethostname():
            return True
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead child not yet reaped) still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_lock(run_dir: Path) -> LockInfo | None:
    try:
        data = json.loads((run_dir / LOCK_FILE).read_text())
        return LockInfo(pid=int(data["pid"]), host=str(data["host"]), started=float(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLock:
    """Exclusive ownership of a run directory by this process.

    Created with O_EXCL so two processes cannot both win; a lock left by a dead process on this
    host is taken over (``stale_owner`` then holds its pid so the caller can say so).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.stale_owner: int | None = None
        self._held = False

    def acquire(self) -> RunLock:
        payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        # The lock appears with its payload already inside (hard link of a finished temp file), so a
        # reader never sees an empty lock and mistakes a live owner for a dead one.
        tmp = self.path.with_name(f".{LOCK_FILE}.{os.getpid()}")
        tmp.write_text(payload)
        try:
            return self._link(tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def _link(self, tmp: Path) -> RunLock:
        for _ in range(2):
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                info = read_lock(self.path.parent)
                if info is not None and info.alive:
                    raise RunLocked(
                        f"run is owned by live process {info.pid} on {info.host}", where=str(self.path.parent)
                    ) from None
                self.stale_owner = info.pid if info is not None else -1
                self.path.unlink(missing_ok=True)
                continue
            self._held = True
            return self
        raise RunLocked("could not take the run lock", where=str(self.path.parent))

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
