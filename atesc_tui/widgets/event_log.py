"""A tail of the run's events, one compact line each."""

from __future__ import annotations

from datetime import datetime

from textual.widgets import RichLog

from core.rundir.events import Event


def format_event(ev: Event) -> str:
    ts = datetime.fromtimestamp(ev.t).strftime("%H:%M:%S")
    k = ev.kind
    if k == "train":
        body = (
            f"step {ev.step} split {ev.split_id_ratio:.2f}/{ev.split_ood_ratio:.2f} "
            f"G {ev.loss_generator:.3f} kd {ev.loss_kd:.3f} fg {ev.loss_forget:.3f} {ev.samples_per_s:.0f}/s"
        )
    elif k == "eval":
        body = f"step {ev.step} student ID {ev.student_acc_id:.3f} OOD {ev.student_acc_ood:.3f}"
        if ev.teacher_acc_id is not None:
            body += f" teacher ID {ev.teacher_acc_id:.3f} OOD {(ev.teacher_acc_ood or 0):.3f}"
    elif k == "start":
        body = f"{ev.run_name} {ev.teacher_kind}/{ev.method} atesc={'on' if ev.atesc else 'off'} from step {ev.step}"
    elif k == "checkpoint":
        body = f"step {ev.step} {ev.path}"
    elif k == "status":
        body = ev.status + (f": {ev.message}" if ev.message else "")
    elif k == "error":
        body = ev.message
    else:  # pragma: no cover - future kinds
        body = ""
    return f"{ts} {k:<10} {body}"


class EventLog(RichLog):
    DEFAULT_CSS = """
    EventLog { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=500, wrap=False, markup=False, highlight=False, **kwargs)

    def add_lines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)
