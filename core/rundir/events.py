"""The event stream every view consumes: pydantic models, an append-only JSONL writer, tolerant readers.

One JSON object per line, ``"v": 1``. Readers skip (and count) malformed lines and tolerate a
torn last line, because a trainer may be killed mid-write or still be writing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core.rundir import faults

EVENT_VERSION = 1
EVENTS_FILE = "events.jsonl"

RunStatus = Literal["running", "paused", "done", "failed", "interrupted"]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = EVENT_VERSION
    t: float = Field(default_factory=time.time, description="Unix time the event was written")


class StartEvent(_Event):
    kind: Literal["start"] = "start"
    run_name: str
    teacher_kind: str
    method: str
    atesc: bool
    iterations: int
    step: int = Field(0, description="Step the run starts (or resumes) from")
    device: str = "cpu"
    world_size: int = 1
    resumed: bool = False
    threads: int | None = Field(None, description="torch CPU threads at start (auto unless run.threads is set)")
    config: dict[str, Any] = Field(default_factory=dict)


class TrainEvent(_Event):
    kind: Literal["train"] = "train"
    step: int
    split_id_ratio: float = Field(description="Share of the synthetic batch judged fragile (ID-like)")
    split_ood_ratio: float = Field(description="Share judged robust (OOD-like)")
    loss_generator: float
    loss_kd: float
    loss_forget: float
    samples_per_s: float
    lr_student: float | None = None
    generator_parts: dict[str, float] = Field(
        default_factory=dict, description="Unweighted generator loss terms (bn, oh, balance, adv, cr, extra)"
    )
    sink_share_fragile: float | None = Field(
        None, description="Share of the fragile group the teacher assigns to its OOD sink class (diagnostic)"
    )
    sink_share_robust: float | None = Field(None, description="Same, robust group (high = the split finds the trap)")
    score_auroc_sink: float | None = Field(
        None, description="AUROC of the robustness score for telling sink-class samples from the rest"
    )
    split_separation: float | None = Field(None, description="feature split: robustness AUROC between the clusters")


class EvalEvent(_Event):
    kind: Literal["eval"] = "eval"
    step: int
    student_acc_id: float
    student_acc_ood: float
    teacher_acc_id: float | None = None
    teacher_acc_ood: float | None = None
    samples_png: str | None = Field(None, description="Path of the sample grid, relative to the run directory")


class CheckpointEvent(_Event):
    kind: Literal["checkpoint"] = "checkpoint"
    step: int
    path: str


class StatusEvent(_Event):
    kind: Literal["status"] = "status"
    status: RunStatus
    step: int = 0
    message: str = ""


class ErrorEvent(_Event):
    kind: Literal["error"] = "error"
    message: str
    traceback: str = ""
    step: int | None = None


Event = Annotated[
    Union[StartEvent, TrainEvent, EvalEvent, CheckpointEvent, StatusEvent, ErrorEvent],
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(line: str | bytes) -> Event:
    """Parse one line; raises ``ValueError`` for anything that is not a known, valid event."""
    try:
        return _ADAPTER.validate_json(line)
    except ValidationError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


class EventWriter:
    """Appends events to ``events.jsonl``; each line is written with one ``write`` and flushed.

    ``enabled=False`` makes every call a no-op, so non-zero ranks of a distributed run share the code.
    """

    def __init__(self, path: Path, *, enabled: bool = True, fsync: bool = False) -> None:
        self.path = path
        self.enabled = enabled
        self._fsync = fsync
        self._fh = open(path, "ab") if enabled else None  # noqa: SIM115 - closed in close()
        if self._fh is not None and _ends_torn(path):
            # A killed or disk-full writer left half a line: end it, so the next event is not glued to it.
            self._fh.write(b"\n")
            self._fh.flush()

    def emit(self, event: _Event) -> None:
        if self._fh is None:
            return
        data = event.model_dump_json().encode() + b"\n"
        try:
            if faults.ACTIVE:
                faults.event_write(self._fh, data, getattr(event, "step", None))
            self._fh.write(data)
            self._fh.flush()
            if self._fsync:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            if exc.filename is None:  # a failed write (e.g. ENOSPC) does not say which file
                raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from None
            raise

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError:
                pass  # unflushed bytes of a failed write; the error was raised by emit()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventTail:
    """Incremental reader of a growing events file: each ``poll`` returns the complete new lines.

    A trailing line without a newline is kept back until it is completed; undecodable or invalid
    lines are skipped and counted in ``skipped``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.skipped = 0
        self._partial = b""

    def poll(self, max_bytes: int = 8 << 20) -> list[Event]:
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:  # file replaced or truncated: start over
                    self.offset, self._partial = 0, b""
                fh.seek(self.offset)
                chunk = fh.read(max_bytes)
        except OSError:  # missing, a directory, unreadable: nothing to show (yet)
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events: list[Event] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                events.append(parse_event(line))
            except ValueError:
                self.skipped += 1
        return events

    @property
    def pending(self) -> bytes:
        """The last line read so far if it has no newline yet (a torn or still-growing line)."""
        return self._partial


def read_events(path: Path) -> tuple[list[Event], int]:
    """All valid events of a file and the number of skipped lines (a torn last line counts as skipped)."""
    tail = EventTail(path)
    events: list[Event] = []
    while True:
        batch = tail.poll()
        if not batch and tail.offset >= _size(path):
            break
        events.extend(batch)
    if tail.pending.strip():
        try:
            events.append(parse_event(tail.pending))
        except ValueError:
            tail.skipped += 1
    return events, tail.skipped


def _ends_torn(path: Path) -> bool:
    """True when a non-empty file does not end with a newline."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
