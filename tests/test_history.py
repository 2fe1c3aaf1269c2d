"""core.rundir.history: one fold of the event log (last event per step, resume-safe, torn-line
tolerant), and every view reading a run through it: runs table, bench cell, report, rich panels."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from rich.console import Console

from core.config import load_config
from core.experiments.bench import Suite, expand, summarize_cell
from core.experiments.report import _series
from core.rundir.events import (
    EVENTS_FILE,
    CheckpointEvent,
    EvalEvent,
    EventWriter,
    StartEvent,
    StatusEvent,
    TrainEvent,
)
from core.rundir.history import RunHistory, Series, read_history
from core.rundir.summary import forget_cache, summarize_run
from atesc_tui.panels import LivePanels


def _train(step: int, session: int) -> TrainEvent:
    """A train event whose loss tells which session wrote it (1 = first run, 2 = the resume)."""
    return TrainEvent(step=step, split_id_ratio=0.5, split_ood_ratio=0.5, loss_generator=float(session),
                      loss_kd=step + session / 10, loss_forget=0.0, samples_per_s=8.0 * session, t=float(step))


def _eval(step: int, acc: float) -> EvalEvent:
    return EvalEvent(step=step, student_acc_id=acc, student_acc_ood=acc / 2, t=float(step))


def _start(step: int, resumed: bool) -> StartEvent:
    return StartEvent(run_name="r", teacher_kind="ntl-target", method="dfq", atesc=True, iterations=12, step=step,
                      resumed=resumed, t=float(step))


def resumed_run_events() -> list:
    """Run 1 reaches step 10 (checkpoint at 6) and is killed; the resume replays 7..10, then goes to 12.

    Step 10's evaluation differs between the sessions (0.9 at first, 0.5 in the replay): the replay
    is the trajectory the run is on, so 0.5 must win and 0.9 must not count as the best."""
    events: list = [_start(0, False), _eval(0, 0.1)]
    for s in range(1, 11):
        events.append(_train(s, 1))
        if s == 5:
            events.append(_eval(5, 0.3))
        if s == 6:
            events.append(CheckpointEvent(step=6, path="checkpoints/step-00000006.safetensors", t=6.0))
    events.append(_eval(10, 0.9))
    events.append(_start(6, True))
    for s in range(7, 13):
        events.append(_train(s, 2))
        if s == 10:
            events.append(_eval(10, 0.5))
    events += [_eval(12, 0.6), StatusEvent(status="done", step=12, t=13.0)]
    return events


def write_run(run_dir: Path, events: list, tail: bytes = b"") -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text('[dfkd]\nbatch_size = 16\nmethod = "dfq"\niterations = 12\n')
    with EventWriter(run_dir / EVENTS_FILE) as w:
        for e in events:
            w.emit(e)
    with open(run_dir / EVENTS_FILE, "ab") as fh:
        fh.write(tail)
    return run_dir


def test_resume_replay_counts_each_step_once() -> None:
    hist = RunHistory()
    hist.ingest(resumed_run_events())
    kd = hist.series["loss_kd"]
    assert list(kd.x) == list(range(1, 13))
    # steps 1-6 from the first session, 7-12 from the resume (which replayed 7-10)
    assert list(kd.y) == pytest.approx([s + 0.1 for s in range(1, 7)] + [s + 0.2 for s in range(7, 13)])
    acc = hist.series["student_acc_id"]
    assert list(acc.x) == [0, 5, 10, 12] and list(acc.y) == pytest.approx([0.1, 0.3, 0.5, 0.6])
    assert acc.best == pytest.approx(0.6)
    assert hist.resume_steps == [6]  # the resume point the charts mark
    assert (hist.step, hist.status, hist.iterations, hist.start.resumed) == (12, "done", 12, True)
    assert hist.samples_per_s == 16.0


def test_interrupted_resume_drops_the_steps_it_has_not_replayed_yet() -> None:
    events = resumed_run_events()
    cut = next(i for i, e in enumerate(events) if e.kind == "train" and e.step == 8 and e.loss_generator == 2.0)
    hist = RunHistory()
    hist.ingest(events[: cut + 1])
    assert list(hist.series["loss_kd"].x) == list(range(1, 9))
    assert list(hist.series["student_acc_id"].x) == [0, 5]  # the first session's eval at 10 is gone
    assert hist.step == 8
    # the eval-only history (runs table) follows the same rule
    light = RunHistory(train_series=False)
    light.ingest(events[: cut + 1])
    assert len(light.series["loss_kd"]) == 0 and list(light.series["student_acc_id"].x) == [0, 5]
    assert light.step == 8 and light.split_id_ratio == 0.5


def test_a_repeated_step_without_a_start_replaces_from_there() -> None:
    """A NaN rollback repeats steps in the same session (no start event)."""
    s = Series()
    for x, y in [(1, 1.0), (2, 2.0), (3, 3.0), (2, 20.0), (3, 30.0), (4, 40.0)]:
        s.append(x, y)
    assert list(s.x) == [1, 2, 3, 4] and list(s.y) == [1.0, 20.0, 30.0, 40.0]
    s.truncate_after(2)
    assert list(s.x) == [1, 2]


def test_torn_last_line_is_held_back_and_a_whole_one_counts(tmp_path: Path) -> None:
    events = [_start(0, False), _train(1, 1), _train(2, 1)]
    torn = write_run(tmp_path / "torn", events, tail=b"not json\n" + _train(3, 1).model_dump_json().encode()[:40])
    hist, skipped = read_history(torn)
    assert list(hist.series["loss_kd"].x) == [1, 2] and skipped == 1
    whole = write_run(tmp_path / "whole", events, tail=_train(3, 1).model_dump_json().encode())  # no newline
    hist, skipped = read_history(whole)
    assert list(hist.series["loss_kd"].x) == [1, 2, 3] and skipped == 0
    assert read_history(tmp_path / "missing")[0].n_events == 0


def test_every_view_reads_a_resumed_run_the_same_way(tmp_path: Path) -> None:
    """Runs table, bench cell, report series and the rich panels, on one resumed log with a torn tail."""
    rd = write_run(tmp_path / "run", resumed_run_events(), tail=b'{"v": 1, "kind": "tra')
    forget_cache()
    row = summarize_run(rd)
    assert (row.status, row.step, row.best_acc_id, row.student_acc_id, row.skipped) == ("done", 12, 0.6, 0.6, 0)

    (cell,) = expand(Suite(seeds=[0], atesc=[True], teachers=["ntl-target"], methods=["dfq"]))
    res = summarize_cell(cell, rd, last_evals=2)
    assert (res.status, res.step, res.evals_used) == ("done", 12, 2)
    assert res.acc_id == pytest.approx((0.5 + 0.6) / 2)  # not 0.9: the replayed eval at 10 wins
    assert res.s_per_iter == pytest.approx(statistics.median([16 / 8] * 6 + [16 / 16] * 6))

    s = _series(rd)
    assert s["eval_step"] == [0, 5, 10, 12] and s["acc_id"] == pytest.approx([0.1, 0.3, 0.5, 0.6])
    assert s["train_step"] == list(range(1, 13))

    cfg = load_config(None, ["dfkd.iterations=12"])
    console = Console(record=True, width=120, file=open(tmp_path / "out.txt", "w"))  # noqa: SIM115
    panels = LivePanels(cfg, rd, console=console)
    for e in resumed_run_events():
        panels.on_event(e)
    assert list(panels.history.series["loss_kd"].x) == list(range(1, 13))
    console.print(panels.render())
    text = console.export_text()
    assert "ID  0.600 0.600" in text and "0.900" not in text  # student ID now, best
