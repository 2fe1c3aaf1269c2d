"""core.rundir: summaries, statuses, incremental reading, malformed lines, learning rate and resumes."""

from __future__ import annotations

import os
import time

import numpy as np
from fake_run import FakeRun, dead_pid

from core.rundir.history import RunHistory
from core.rundir.summary import list_runs, summarize_run


def test_summaries_of_finished_and_crashed_runs(populated):
    root, runs = populated
    rows = {s.name: s for s in list_runs(root)}
    assert set(rows) == {"sl-dfq-0001", "ntl-dfq-0002", "ntl-atesc-0003", "crash-0004"}
    sl = rows["sl-dfq-0001"]
    assert (sl.teacher_kind, sl.method, sl.atesc, sl.status, sl.step, sl.iterations) == ("sl", "dfq", False, "done", 60, 100)
    assert sl.student_acc_id == 0.46 and sl.best_acc_id == 0.46 and sl.teacher_acc_id == 0.93
    assert sl.checkpoints == 1 and not sl.alive
    crash = rows["crash-0004"]
    assert crash.status == "failed" and crash.error.startswith("RuntimeError: loss is NaN")
    # newest (last event time) first: the fake clock runs longest in the 80-step run
    ordered = list_runs(root)
    assert ordered[0].name == "ntl-atesc-0003"
    assert [s.updated for s in ordered] == sorted((s.updated for s in ordered), reverse=True)


def test_running_stale_and_incremental(runs_root):
    run = FakeRun(runs_root / "live", lock_pid=os.getpid())
    run.status("running")
    run.advance(5)
    s = summarize_run(run.run_dir)
    assert (s.status, s.step, s.alive, s.pid) == ("running", 5, True, os.getpid())
    run.advance(20)
    assert summarize_run(run.run_dir).step == 25
    # owner died without a final status: stale
    run.lock(dead_pid())
    assert summarize_run(run.run_dir).status == "stale"
    run.close()


def test_malformed_lines_are_counted_not_fatal(runs_root):
    run = FakeRun(runs_root / "bad", lock_pid=dead_pid())
    run.advance(3)
    run.raw(b"not json\n\xff\xfe\n{\"v\": 1, \"kind\": \"train\"}\n")
    run.advance(2)
    run.raw(b'{"v": 1, "kind": "tra')  # torn last line: held back, not counted yet
    run.close()
    s = summarize_run(run.run_dir)
    assert s.skipped == 3 and s.step == 5
    hist, skipped = RunHistory.load(run.run_dir)
    assert skipped == 3 and len(hist.series["loss_kd"]) == 5


def test_summary_cache_is_fast(runs_root):
    for i in range(30):
        FakeRun(runs_root / f"r{i:02d}", iterations=1000).advance(200, samples=False)
    list_runs(runs_root)
    t = time.perf_counter()
    rows = list_runs(runs_root)
    elapsed = time.perf_counter() - t
    assert len(rows) == 30 and all(r.step == 200 for r in rows)
    assert elapsed < 0.1, elapsed


def test_history_eta(runs_root):
    run = FakeRun(runs_root / "eta", iterations=100)
    run.advance(20, samples=False)
    hist, _ = RunHistory.load(run.run_dir)
    # fake clock: 0.1 s per step -> 80 steps left -> ~8 s
    assert abs(hist.steps_per_s - 10.0) < 1e-3
    assert abs(hist.eta_s - 8.0) < 1e-3


def test_history_keeps_learning_rate_and_resume_points(runs_root):
    run = FakeRun(runs_root / "lr", iterations=100)
    run.advance(30, samples=False)
    run.resume()
    run.advance(10, samples=False)
    run.close()
    hist, _ = RunHistory.load(run.run_dir)
    lr = hist.series["lr_student"]
    assert len(lr) == 40 and lr.y[0] == round(0.05 * (1 + np.cos(np.pi * 0.01)), 6) and lr.y[-1] < lr.y[0]
    assert hist.resume_steps == [30]
    assert hist.eta_s is not None  # the ETA comes back after two train events of the resumed process
