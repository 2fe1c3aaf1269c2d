"""Tiny real runs through the CLI: exact resume after SIGKILL, SIGINT -> 130 + checkpoint, bad input -> 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from core.rundir import checkpoint as ckpt
from core.rundir.events import read_events
from tests.conftest import atesc, spawn


def _final_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[tuple[int, float, float]]]:
    latest = ckpt.load_latest_valid(run_dir / "checkpoints")
    events, _ = read_events(run_dir / "events.jsonl")
    evals = sorted({(e.step, e.student_acc_id, e.student_acc_ood) for e in events if e.kind == "eval"})
    return latest.tensors, evals


def _wait_for(path: Path, predicate, timeout: float = 240) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            events, _ = read_events(path)
            if predicate(events):
                return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting on {path}")


def test_run_writes_the_run_directory(reference: tuple[Path, Path]) -> None:
    _, run_dir = reference
    events, skipped = read_events(run_dir / "events.jsonl")
    kinds = [e.kind for e in events]
    assert skipped == 0
    assert kinds.count("train") == 6 and kinds.count("eval") == 4  # steps 0, 2, 4, 6
    assert events[-1].kind == "status" and events[-1].status == "done"
    first_eval = next(e for e in events if e.kind == "eval")
    assert first_eval.teacher_acc_id is not None and first_eval.teacher_acc_id > first_eval.teacher_acc_ood
    splits = [e.split_id_ratio for e in events if e.kind == "train"]
    assert all(abs(e.split_id_ratio + e.split_ood_ratio - 1) < 1e-6 for e in events if e.kind == "train")
    assert any(0 < s < 1 for s in splits), splits  # ATEsc split batches into fragile and robust samples
    parts = next(e for e in events if e.kind == "train").generator_parts
    assert {"bn", "oh", "balance", "adv"} <= set(parts) and parts["bn"] > 0  # the generator's loss terms
    assert (run_dir / "config.toml").is_file() and (run_dir / "teacher.json").is_file()
    assert not (run_dir / "run.lock").exists()
    assert sorted(p.name for p in (run_dir / "samples").glob("step-00000006*.png")) == [
        "step-00000006-fragile.png", "step-00000006-robust.png", "step-00000006.png"]


def test_sigkill_then_resume_is_bit_exact(reference: tuple[Path, Path], tmp_path: Path) -> None:
    preset, ref_dir = reference
    run_dir = tmp_path / "killed"
    proc = spawn("run", str(preset), "--run-dir", str(run_dir), "--json")
    # Kill after the step-2 checkpoint, in the middle of later training.
    _wait_for(run_dir / "events.jsonl", lambda ev: any(e.kind == "train" and e.step == 3 for e in ev))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run_dir / "run.lock").exists()  # stale lock of the dead process
    done = atesc("resume", str(run_dir), "--json")
    assert done.returncode == 0, done.stderr
    ref_tensors, ref_evals = _final_state(ref_dir)
    got_tensors, got_evals = _final_state(run_dir)
    model_keys = [k for k in ref_tensors if k.startswith(("model/", "optim/", "extra/"))]
    assert model_keys and all(torch.equal(ref_tensors[k], got_tensors[k]) for k in model_keys)
    assert got_evals == ref_evals


def test_sigint_saves_checkpoint_and_exits_130(reference: tuple[Path, Path], tmp_path: Path) -> None:
    preset, _ = reference
    run_dir = tmp_path / "interrupted"
    proc = spawn("run", str(preset), "--run-dir", str(run_dir), "--json", "--set", "dfkd.iterations=1000")
    _wait_for(run_dir / "events.jsonl", lambda ev: any(e.kind == "train" and e.step == 3 for e in ev))
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"atesc resume {run_dir}" in stderr
    events, _ = read_events(run_dir / "events.jsonl")
    assert events[-1].kind == "status" and events[-1].status == "interrupted"
    saved = ckpt.load_latest_valid(run_dir / "checkpoints")
    assert saved.step >= 3
    more = atesc("resume", str(run_dir), "--steps", "1", "--json")
    assert more.returncode == 0, more.stderr
    assert ckpt.load_latest_valid(run_dir / "checkpoints").step == saved.step + 1


def test_resume_refuses_live_owner_and_missing_checkpoint(reference: tuple[Path, Path], tmp_path: Path) -> None:
    _, ref_dir = reference
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text((ref_dir / "config.toml").read_text())
    proc = atesc("resume", str(run_dir))
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    # A live owner (this test process) holds the lock of a resumable run.
    (run_dir / "checkpoints").mkdir()
    for f in (ref_dir / "checkpoints").iterdir():
        (run_dir / "checkpoints" / f.name).write_bytes(f.read_bytes())
    (run_dir / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": 0}))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (run_dir / "checkpoints").iterdir())
    proc = atesc("resume", str(run_dir))
    assert proc.returncode == 2 and "owned by live process" in proc.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (run_dir / "checkpoints").iterdir()) == before


def test_resume_of_a_corrupt_only_checkpoint_is_bad_input(reference: tuple[Path, Path], tmp_path: Path) -> None:
    _, ref_dir = reference
    run_dir = tmp_path / "corrupt"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.toml").write_text((ref_dir / "config.toml").read_text())
    (run_dir / "checkpoints" / "step-00000002.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    proc = atesc("resume", str(run_dir))
    assert proc.returncode == 2 and "header length" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "dfkd.nope=1"], "dfkd.nope: unknown key"),
        (["--set", "dfkd.iterations=abc"], "dfkd.iterations"),
        (["--set", "teacher.epochs=-1"], "teacher.epochs"),
        (["--set", "data.ood_domain=nowhere"], "data.ood_domain: unknown data domain"),
        (["--set", "student.arch=alexnet"], "student.arch: unknown model"),
        (["--set", "teacher.path=/nonexistent/t.safetensors"], "not found"),
        (["--set", "student.optimizer=rmsprop"], "student.optimizer"),
        (["--set", "dfkd.pool_size=-1"], "dfkd.pool_size"),
        (["--set", "atesc.bn_mix=1.0"], "atesc.bn_mix"),
        (["--set", "atesc.split=kmeans"], "atesc.split"),
    ],
)
def test_bad_input_exit_2_without_run_dir(tiny_preset: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    run_dir = tmp_path / "never"
    proc = atesc("run", str(tiny_preset), "--run-dir", str(run_dir), *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not run_dir.exists()


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("run.lock"))
    return dst


def _run_status(root: Path) -> list[tuple[str, int]]:
    proc = atesc("runs", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    return [(r["status"], r["step"]) for r in map(json.loads, proc.stdout.splitlines())]


def test_refused_resume_leaves_a_finished_run_done(reference: tuple[Path, Path], tmp_path: Path) -> None:
    _, ref_dir = reference
    run_dir = _copy_run(ref_dir, tmp_path / "runs" / "done-run")
    assert _run_status(tmp_path / "runs") == [("done", 6)]
    for f in (run_dir / "checkpoints").glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:100])  # every checkpoint truncated: nothing to resume from
    events_before = (run_dir / "events.jsonl").read_bytes()
    proc = atesc("resume", str(run_dir), "--iterations", "8")
    assert proc.returncode == 2 and "truncated" in proc.stderr, proc.stderr
    assert (run_dir / "events.jsonl").read_bytes() == events_before
    assert _run_status(tmp_path / "runs") == [("done", 6)]


def test_finished_run_extended_with_iterations(reference: tuple[Path, Path], tmp_path: Path) -> None:
    _, ref_dir = reference
    run_dir = _copy_run(ref_dir, tmp_path / "runs" / "extend")
    proc = atesc("resume", str(run_dir), "--iterations", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    assert _run_status(tmp_path / "runs") == [("done", 8)]
    assert ckpt.latest_checkpoint(run_dir / "checkpoints").name == "step-00000008.safetensors"


REFERENCE_RECIPE = ["--set", "dfkd.fresh_batches=true", "--set", "dfkd.pool_size=40", "--set", "student.optimizer=sgd",
                    "--set", "student.lr=0.1", "--set", "student.schedule=cosine", "--set", "dfkd.temperature=20"]


def test_pool_fresh_batches_and_cosine_resume_bit_exact(reference: tuple[Path, Path], tmp_path: Path) -> None:
    """Pause mid-run (pool wrapped around, lr mid-cosine) and resume: same weights, pool and evals."""
    preset, _ = reference
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert atesc("run", str(preset), "--run-dir", str(whole), "--json", *REFERENCE_RECIPE).returncode == 0
    first = atesc("run", str(preset), "--run-dir", str(split), "--json", "--steps", "3", *REFERENCE_RECIPE)
    assert first.returncode == 0, first.stderr
    assert atesc("resume", str(split), "--json").returncode == 0
    ref_tensors, ref_evals = _final_state(whole)
    got_tensors, got_evals = _final_state(split)
    assert any(k.startswith("extra/pool/") for k in ref_tensors)
    keys = [k for k in ref_tensors if k.startswith(("model/", "optim/", "extra/"))]
    assert all(torch.equal(ref_tensors[k], got_tensors[k]) for k in keys)
    assert [e for e in got_evals if e[0] != 3] == ref_evals  # the pause adds an evaluation at step 3
    lrs = [e.lr_student for e in read_events(whole / "events.jsonl")[0] if e.kind == "train"]
    assert lrs[0] == pytest.approx(0.1) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.01
