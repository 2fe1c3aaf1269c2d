"""Events round-trip; readers tolerate a torn last line and skip garbage, counting it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.rundir.events import EvalEvent, EventTail, EventWriter, StartEvent, StatusEvent, TrainEvent, parse_event, read_events


def _train(step: int) -> TrainEvent:
    return TrainEvent(step=step, split_id_ratio=0.25, split_ood_ratio=0.75, loss_generator=1.5, loss_kd=0.5,
                      loss_forget=0.1, samples_per_s=100.0)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    written = [
        StartEvent(run_name="r", teacher_kind="sl", method="dfq", atesc=True, iterations=10),
        _train(1),
        EvalEvent(step=1, student_acc_id=0.5, student_acc_ood=0.1, teacher_acc_id=0.9, teacher_acc_ood=0.2),
        StatusEvent(status="done", step=1),
    ]
    with EventWriter(path) as writer:
        for ev in written:
            writer.emit(ev)
    events, skipped = read_events(path)
    assert events == written and skipped == 0
    assert all(e.v == 1 for e in events)


def test_torn_last_line_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = _train(1).model_dump_json()
    path.write_bytes(good.encode() + b"\nnot json\n\xff\xfe\n" + b'{"kind": "train", "step": "x"}\n' + good[:20].encode())
    events, skipped = read_events(path)
    assert [e.step for e in events] == [1]
    assert skipped == 4  # garbage, bad bytes, invalid field, torn tail


def test_tail_is_incremental_and_waits_for_a_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.poll() == []  # no file yet
    line = _train(1).model_dump_json().encode()
    path.write_bytes(line[:10])
    assert tail.poll() == []
    with open(path, "ab") as fh:
        fh.write(line[10:] + b"\n" + _train(2).model_dump_json().encode() + b"\n")
    assert [e.step for e in tail.poll()] == [1, 2]
    assert tail.poll() == [] and tail.skipped == 0


def test_parse_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        parse_event('{"kind": "nope"}')


def test_disabled_writer_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path, enabled=False)
    writer.emit(_train(1))
    writer.close()
    assert not path.exists()
