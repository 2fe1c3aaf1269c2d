"""Fault injection on tiny real runs: nothing is lost, nothing non-finite is saved, no traceback.

Faults come from ``core.rundir.faults`` (``ATESC_FAULT_*`` environment variables read by the subprocess):
the process kills itself at an exact point, a write fails with ENOSPC, a loss turns NaN/Inf, a save
is slowed down so signals land while it is in flight. After each fault the run is resumed and its
final weights, optimizer state and evaluation metrics must equal one uninterrupted reference run.
The TUI's reader (``core.rundir.summary.summarize_run``) must summarise every faulted run directory.

Test ids are counted in README_reliability.md (``FAULTS`` below lists them).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.rundir import checkpoint as ckpt
from core.rundir.events import read_events
from core.rundir.summary import forget_cache, summarize_run
from tests.conftest import REPO, atesc, spawn

LR = 1e-3  # student.lr default in TINY_PRESET


# ---------------------------------------------------------------- helpers


def _env(**faults: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATESC_FAULT_")}
    env.update({f"ATESC_FAULT_{k.upper()}": v for k, v in faults.items()})
    return env


def _wait(predicate, what: str, timeout: float = 180, proc: subprocess.Popen | None = None) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _events(run_dir: Path) -> list:
    path = run_dir / "events.jsonl"
    return read_events(path)[0] if path.exists() else []


def _tmp_checkpoints(run_dir: Path) -> list[Path]:
    d = run_dir / "checkpoints"
    return sorted(d.glob(".step-*.tmp*")) if d.is_dir() else []


def _state(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[tuple[int, float, float]]]:
    latest = ckpt.load_latest_valid(run_dir / "checkpoints")
    evals = sorted({(e.step, e.student_acc_id, e.student_acc_ood) for e in _events(run_dir) if e.kind == "eval"})
    return latest.tensors, evals


def assert_same_as_reference(run_dir: Path, ref_dir: Path) -> None:
    """Final weights, optimizer/extra state and every evaluation equal the uninterrupted run."""
    ref_t, ref_evals = _state(ref_dir)
    got_t, got_evals = _state(run_dir)
    keys = [k for k in ref_t if k.startswith(("model/", "optim/", "extra/"))]
    assert keys and set(keys) <= set(got_t)
    differ = [k for k in keys if not torch.equal(ref_t[k], got_t[k])]
    assert not differ, f"{len(differ)} tensors differ from the reference, e.g. {differ[:3]}"
    assert got_evals == ref_evals
    assert ckpt.load_latest_valid(run_dir / "checkpoints").step == 6


def assert_one_line(stderr: str, *needles: str) -> None:
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("fault: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_all_checkpoints_finite(run_dir: Path) -> None:
    files = ckpt.list_checkpoints(run_dir / "checkpoints")
    assert files
    for path in files:
        c = ckpt.load_checkpoint(path)
        for key, t in c.tensors.items():
            if t.is_floating_point():
                assert torch.isfinite(t).all(), f"{path.name}: {key} is not finite"


def summary(run_dir: Path):  # noqa: ANN201
    """What the TUI shows for a run directory: must never raise."""
    forget_cache()
    return summarize_run(run_dir)


def resume_to_end(run_dir: Path) -> subprocess.CompletedProcess[str]:
    done = atesc("resume", str(run_dir), "--json", env=_env())
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        json.loads(line)  # --json output stays machine-readable (notes go to stderr)
    return done


# ---------------------------------------------------------------- SIGKILL at exact points


@pytest.mark.parametrize(
    ("point", "resumes_from"),
    [("mid_step:3", 2), ("before_rename:4", 2),
     pytest.param("eval:4", 2, marks=pytest.mark.slow), pytest.param("checkpoint:4", 4, marks=pytest.mark.slow)],
)
def test_sigkill_then_resume_equals_uninterrupted(reference, tmp_path: Path, point: str, resumes_from: int) -> None:
    preset, ref_dir = reference
    run_dir = tmp_path / "killed"
    proc = atesc("run", str(preset), "--run-dir", str(run_dir), "--json", env=_env(kill_at=point))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (run_dir / "run.lock").exists()  # the dead owner's lock is left behind
    # The newest checkpoint that loads is the one before the kill; a half-saved one never counts.
    assert ckpt.load_latest_valid(run_dir / "checkpoints").step == resumes_from
    if point.startswith("before_rename"):
        assert _tmp_checkpoints(run_dir)  # the complete temp file was never renamed
        assert not (run_dir / "checkpoints" / ckpt.checkpoint_name(4)).exists()
        assert (run_dir / "checkpoints" / "latest").read_text() == ckpt.checkpoint_name(2)
    s = summary(run_dir)
    assert s.status == "stale" and not s.alive and s.step >= resumes_from
    done = resume_to_end(run_dir)
    assert "stale lock" in done.stderr
    assert_same_as_reference(run_dir, ref_dir)
    assert not _tmp_checkpoints(run_dir)  # the dead writer's temp file was cleaned up
    assert summary(run_dir).status == "done"


def test_sigkill_while_writing_the_first_checkpoint(reference, tmp_path: Path) -> None:
    """No checkpoint yet when the kill lands: resume says so (exit 2), a fresh run starts cleanly."""
    preset, ref_dir = reference
    run_dir = tmp_path / "first"
    proc = atesc("run", str(preset), "--run-dir", str(run_dir), "--json", env=_env(kill_before_rename="1"))
    assert proc.returncode == -signal.SIGKILL
    again = atesc("resume", str(run_dir), env=_env())
    assert again.returncode == 2
    assert_one_line(again.stderr, "no checkpoint")
    assert summary(run_dir).status == "stale"


# ---------------------------------------------------------------- SIGINT / SIGTERM


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT, signal.SIGINT),
     pytest.param((signal.SIGINT, signal.SIGTERM), marks=pytest.mark.slow)],
    ids=["sigterm", "sigint-x3-while-saving", "sigint-then-sigterm"],
)
def test_signal_during_save_then_resume_equals_uninterrupted(reference, tmp_path: Path, signals) -> None:  # noqa: ANN001
    """The first signal lands while the step-2 checkpoint is being written (slowed down); later ones
    land during that save and during the interrupt save. Exit 130, nothing corrupt, exact resume."""
    preset, ref_dir = reference
    run_dir = tmp_path / "signalled"
    proc = spawn("run", str(preset), "--run-dir", str(run_dir), "--json", env=_env(slow_save="1.0"))
    _wait(lambda: bool(_tmp_checkpoints(run_dir)), "the step-2 save", proc=proc)
    proc.send_signal(signals[0])
    if len(signals) > 1:
        time.sleep(0.2)
        proc.send_signal(signals[1])  # second signal, same save
    if len(signals) > 2:
        # The periodic save finishes, then the interrupt save starts: signal it too.
        _wait(lambda: any(e.kind == "checkpoint" for e in _events(run_dir)), "the step-2 checkpoint", proc=proc)
        _wait(lambda: bool(_tmp_checkpoints(run_dir)), "the interrupt save", proc=proc)
        proc.send_signal(signals[2])
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and f"atesc resume {run_dir}" in stderr
    assert not _tmp_checkpoints(run_dir) and not (run_dir / "run.lock").exists()
    saved = ckpt.load_latest_valid(run_dir / "checkpoints")
    assert saved.step == 2
    for path in ckpt.list_checkpoints(run_dir / "checkpoints"):
        ckpt.load_checkpoint(path)  # every file on disk loads
    assert _events(run_dir)[-1].status == "interrupted"
    assert summary(run_dir).status == "interrupted"
    resume_to_end(run_dir)
    assert_same_as_reference(run_dir, ref_dir)


# ---------------------------------------------------------------- disk full


@pytest.mark.parametrize(("target", "names"), [("checkpoint:4", "step-00000004.safetensors"), ("events:3", "events.jsonl")])
def test_disk_full_one_line_error_previous_checkpoint_intact(reference, tmp_path: Path, target: str, names: str) -> None:
    preset, ref_dir = reference
    run_dir = tmp_path / "full"
    proc = atesc("run", str(preset), "--run-dir", str(run_dir), "--json", env=_env(enospc=target))
    assert proc.returncode == 1, proc.stderr
    assert_one_line(proc.stderr, "No space left on device", names)
    assert not _tmp_checkpoints(run_dir) and not (run_dir / "run.lock").exists()
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == [ckpt.checkpoint_name(2)]
    assert ckpt.load_latest_valid(run_dir / "checkpoints").step == 2
    s = summary(run_dir)
    if target.startswith("checkpoint"):
        assert s.status == "failed" and "No space left on device" in (s.error or "")
    else:  # the disk took half an event line, then nothing: the torn line is skipped, the run is stale
        assert s.status == "stale" and s.skipped <= 1
    # Space is back: the run continues exactly.
    resume_to_end(run_dir)
    assert_same_as_reference(run_dir, ref_dir)
    events, skipped = read_events(run_dir / "events.jsonl")
    assert skipped == (1 if target.startswith("events") else 0)  # only the torn line; nothing glued to it
    assert events[-1].kind == "status" and events[-1].status == "done"
    assert summary(run_dir).status == "done"


# ---------------------------------------------------------------- NaN / Inf


@pytest.mark.parametrize(("loss", "value"), [("student", "nan"), pytest.param("generator", "inf", marks=pytest.mark.slow)])
def test_nan_rollback_lowers_lr_and_finishes(reference, tmp_path: Path, loss: str, value: str) -> None:
    preset, _ = reference
    run_dir = tmp_path / "rollback"
    proc = atesc("run", str(preset), "--run-dir", str(run_dir), "--json", "--set", "run.nan_policy=rollback",
                 env=_env(nan_at_step="3", nan_loss=loss, nan_value=value))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    events = _events(run_dir)
    notes = [e.message for e in events if e.kind == "status" and "rolled back" in e.message]
    assert len(notes) == 1 and "rolled back to step 2" in notes[0]
    lrs = {e.step: e.lr_student for e in events if e.kind == "train"}
    assert lrs[1] == lrs[2] == pytest.approx(LR) and all(lrs[s] == pytest.approx(LR / 2) for s in (3, 4, 5, 6))
    assert events[-1].status == "done"
    assert_all_checkpoints_finite(run_dir)
    final = ckpt.load_latest_valid(run_dir / "checkpoints")
    assert final.step == 6 and final.info["rollbacks"] == 1
    groups = json.loads(final.metadata["optimizers"])
    assert all(g["lr"] == pytest.approx(LR / 2) for g in groups["student"]["param_groups"])
    assert summary(run_dir).status == "done"


def test_nan_rollback_gives_up_after_repeated_failures(reference, tmp_path: Path) -> None:
    """A NaN that comes back every time: each rollback halves the rate again, then a clear stop."""
    preset, _ = reference
    run_dir = tmp_path / "hopeless"
    proc = atesc("run", str(preset), "--run-dir", str(run_dir), "--json", "--set", "run.nan_policy=rollback",
                 env=_env(nan_at_step="3", nan_repeat="1"), timeout=90)
    assert proc.returncode == 1, proc.stderr
    assert_one_line(proc.stderr, "student loss is nan at step 3", "run.nan_policy=rollback")
    events = _events(run_dir)
    notes = [e.message for e in events if e.kind == "status" and "rolled back" in e.message]
    assert len(notes) == 3
    lrs = [e.lr_student for e in events if e.kind == "train" and e.step == 3]
    assert lrs == []  # step 3 never completed
    assert_all_checkpoints_finite(run_dir)
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == [ckpt.checkpoint_name(2)]
    s = summary(run_dir)
    assert s.status == "failed" and "nan" in (s.error or "")


def test_nan_stop_policy_clear_error_no_nonfinite_checkpoint(reference, tmp_path: Path) -> None:
    preset, _ = reference
    run_dir = tmp_path / "stop"
    proc = atesc("run", str(preset), "--run-dir", str(run_dir), "--json", "--set", "run.nan_policy=stop",
                 env=_env(nan_at_step="3", nan_loss="generator", nan_value="nan"))
    assert proc.returncode == 1, proc.stderr
    assert_one_line(proc.stderr, "generator loss is not finite", "run.nan_policy=stop", str(run_dir))
    assert_all_checkpoints_finite(run_dir)
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == [ckpt.checkpoint_name(2)]
    s = summary(run_dir)
    assert s.status == "failed" and "not finite" in (s.error or "")


# ---------------------------------------------------------------- run locks


def test_second_process_refused_then_stale_lock_taken_over(reference, tmp_path: Path) -> None:
    preset, _ = reference
    run_dir = tmp_path / "owned"
    owner = spawn("run", str(preset), "--run-dir", str(run_dir), "--json", "--set", "dfkd.iterations=100000")
    try:
        _wait(lambda: any(e.kind == "train" for e in _events(run_dir)), "the owner's first step", proc=owner)
        s = summary(run_dir)
        assert s.status == "running" and s.alive and s.pid == owner.pid
        for args, needle in ((["resume", str(run_dir)], f"owned by live process {owner.pid}"),
                             (["run", str(preset), "--run-dir", str(run_dir)], "already holds a run")):
            second = atesc(*args, env=_env())
            assert second.returncode == 2, second.stderr
            assert_one_line(second.stderr, str(run_dir), needle)
        assert owner.poll() is None  # the owner is untouched and keeps training
        assert json.loads((run_dir / "run.lock").read_text())["pid"] == owner.pid
        config_before = (run_dir / "config.toml").read_bytes()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
    lock = json.loads((run_dir / "run.lock").read_text())
    assert lock["pid"] == owner.pid
    assert (run_dir / "config.toml").read_bytes() == config_before  # the refused `run` overwrote nothing
    assert summary(run_dir).status == "stale"
    more = atesc("resume", str(run_dir), "--steps", "1", "--json", env=_env())
    assert more.returncode == 0, more.stderr
    assert f"stale lock of dead process {owner.pid}" in more.stderr
    for line in more.stdout.splitlines():
        json.loads(line)
    assert not (run_dir / "run.lock").exists()


@pytest.mark.slow
def test_garbage_lock_file_is_taken_over(reference, tmp_path: Path) -> None:
    """A lock file left empty/garbled (crash between create and write) does not block the run forever."""
    preset, ref_dir = reference
    run_dir = tmp_path / "garbled"
    proc = atesc("run", str(preset), "--run-dir", str(run_dir), "--json", env=_env(kill_at="checkpoint:2"))
    assert proc.returncode == -signal.SIGKILL
    (run_dir / "run.lock").write_bytes(b"\x00\xff{not json")
    s = summary(run_dir)
    assert s.status in ("stale", "running") and not s.alive
    resume_to_end(run_dir)
    assert_same_as_reference(run_dir, ref_dir)


def test_lock_of_a_live_process_on_another_host_is_respected(reference, tmp_path: Path) -> None:
    _, ref_dir = reference
    run_dir = tmp_path / "remote"
    run_dir.mkdir()
    for name in ("config.toml", "teacher.json"):
        (run_dir / name).write_bytes((ref_dir / name).read_bytes())
    (run_dir / "checkpoints").mkdir()
    src = ckpt.latest_checkpoint(ref_dir / "checkpoints")
    (run_dir / "checkpoints" / src.name).write_bytes(src.read_bytes())
    lock = {"pid": 1, "host": socket.gethostname() + "-elsewhere", "started": time.time()}
    (run_dir / "run.lock").write_text(json.dumps(lock))
    proc = atesc("resume", str(run_dir), env=_env())
    assert proc.returncode == 2
    assert_one_line(proc.stderr, "owned by live process 1")
    assert json.loads((run_dir / "run.lock").read_text()) == lock


# ---------------------------------------------------------------- the fault switches themselves


def test_faults_inactive_without_environment() -> None:
    code = "import core.rundir.faults as f, core.rundir.checkpoint as c; f.install(); print(f.ACTIVE, c.before_rename)"
    env = _env()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=True)
    assert out.stdout.split() == ["False", "None"]


def test_fault_variables_do_not_leak_into_config(reference) -> None:
    preset, _ = reference
    proc = atesc("validate", str(preset), env=_env(nan_at_step="3", enospc="events:1"))
    assert proc.returncode == 0, proc.stderr


def test_poison_keeps_tensor_type() -> None:
    from core.rundir import faults

    saved = dict(faults.PLAN)
    try:
        faults.PLAN.clear()
        faults.PLAN.update({"nan": {"step": 2, "loss": "student", "value": math.inf, "repeat": False},
                            "fired": set(), "kill": {}, "enospc": {}, "slow_save": 0.0})
        x = torch.tensor(1.5, requires_grad=True)
        assert faults.poison(x, 1, "student") is x
        y = faults.poison(x * 2, 2, "student")
        assert torch.is_tensor(y) and math.isinf(float(y.detach())) and y.requires_grad
        assert math.isfinite(float(faults.poison(x * 2, 2, "student").detach()))  # fires once
    finally:
        faults.PLAN.clear()
        faults.PLAN.update(saved)
