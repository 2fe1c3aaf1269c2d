"""A fake trainer: writes a realistic run directory and its events, deterministically.

Used by the TUI tests and the ingest benchmark; no torch involved.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path

from core.config import Config
from core.rundir.events import (
    CheckpointEvent,
    EvalEvent,
    ErrorEvent,
    StartEvent,
    StatusEvent,
    TrainEvent,
)
from core.rundir import CHECKPOINT_DIR, CONFIG_FILE, LOCK_FILE, SAMPLES_DIR

T0 = 1_700_000_000.0


class FakeRun:
    """Writes a run directory step by step. ``t`` is a fake clock so output is deterministic."""

    def __init__(
        self,
        run_dir: Path,
        *,
        iterations: int = 100,
        teacher_kind: str = "ntl-target",
        method: str = "dfq",
        atesc: bool = True,
        seed: int = 0,
        eval_every: int = 10,
        lock_pid: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.iterations = iterations
        self.eval_every = eval_every
        self.seed = seed
        self.t = T0
        self.step = 0
        cfg = Config()
        cfg.teacher.kind = teacher_kind
        cfg.dfkd.method = method
        cfg.dfkd.iterations = iterations
        cfg.atesc.enabled = atesc
        cfg.run.seed = seed
        cfg.run.name = self.run_dir.name
        (self.run_dir / CONFIG_FILE).write_text(cfg.to_toml())
        self.config = cfg
        self._fh = open(self.run_dir / "events.jsonl", "ab")  # noqa: SIM115
        if lock_pid is not None:
            self.lock(lock_pid)
        self.emit(
            StartEvent(
                t=self.t,
                run_name=self.run_dir.name,
                teacher_kind=teacher_kind,
                method=method,
                atesc=atesc,
                iterations=iterations,
                config=cfg.to_toml_dict(),
            )
        )

    def lock(self, pid: int) -> None:
        (self.run_dir / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": self.t}))

    def unlock(self) -> None:
        (self.run_dir / LOCK_FILE).unlink(missing_ok=True)

    def emit(self, event) -> None:
        self._fh.write(event.model_dump_json().encode() + b"\n")
        self._fh.flush()

    def raw(self, data: bytes) -> None:
        self._fh.write(data)
        self._fh.flush()

    def metrics(self, step: int) -> dict[str, float]:
        x = step / max(1, self.iterations)
        ph = 0.7 * self.seed
        split = 0.5 + 0.3 * x + 0.05 * math.sin(step / 3 + ph)
        return dict(
            split_id_ratio=round(split, 4),
            split_ood_ratio=round(1 - split, 4),
            loss_generator=round(3.0 * math.exp(-3 * x) + 0.2 + 0.1 * math.sin(step + ph), 4),
            loss_kd=round(1.5 * math.exp(-2 * x) + 0.05 * math.cos(step / 2 + ph), 4),
            loss_forget=round(0.3 + 0.1 * math.sin(step / 5 + ph), 4),
            samples_per_s=round(640.0 + 10 * math.sin(step + ph), 2),
            lr_student=round(0.1 * 0.5 * (1 + math.cos(math.pi * x)), 6),  # cosine schedule
        )

    def acc(self, step: int) -> tuple[float, float]:
        x = step / max(1, self.iterations)
        return round(0.1 + 0.6 * x + 0.02 * self.seed, 4), round(0.1 + 0.05 * x, 4)

    def advance(self, n: int = 1, *, samples: bool = True) -> None:
        for _ in range(n):
            self.step += 1
            self.t += 0.1
            self.emit(TrainEvent(t=self.t, step=self.step, **self.metrics(self.step)))
            if self.step % self.eval_every == 0 or self.step == 1:
                acc_id, acc_ood = self.acc(self.step)
                png = self.write_samples(self.step) if samples else None
                self.emit(
                    EvalEvent(
                        t=self.t,
                        step=self.step,
                        student_acc_id=acc_id,
                        student_acc_ood=acc_ood,
                        teacher_acc_id=0.93 if self.step == 1 else None,
                        teacher_acc_ood=0.10 if self.step == 1 else None,
                        samples_png=png,
                    )
                )

    def write_samples(self, step: int) -> str:
        """The batch grid (8 x 4 tiles, 2:1 like the trainer's) and, with ATEsc, its fragile
        (8 x 3) and robust (8 x 1) parts."""
        from PIL import Image

        d = self.run_dir / SAMPLES_DIR
        d.mkdir(exist_ok=True)
        rel = f"{SAMPLES_DIR}/step-{step:06d}.png"
        parts = [("", 4)] + ([("-fragile", 3), ("-robust", 1)] if self.config.atesc.enabled else [])
        for suffix, rows in parts:
            img = Image.new("RGB", (64, 8 * rows))
            px = img.load()
            for i in range(64):
                for j in range(8 * rows):
                    px[i, j] = ((i * 4 + step) % 256, (j * 8) % 256, ((i ^ j) * 8 + self.seed * 40) % 256)
            img.save(self.run_dir / rel.replace(".png", f"{suffix}.png"))
        return rel

    def resume(self) -> None:
        """A new trainer process taking over from the current step (as ``atesc resume`` does)."""
        cfg = self.config
        self.emit(
            StartEvent(
                t=self.t, run_name=self.run_dir.name, teacher_kind=cfg.teacher.kind, method=cfg.dfkd.method,
                atesc=cfg.atesc.enabled, iterations=self.iterations, step=self.step, resumed=True,
                config=cfg.to_toml_dict(),
            )
        )
        self.status("running")

    def checkpoint(self) -> None:
        d = self.run_dir / CHECKPOINT_DIR
        d.mkdir(exist_ok=True)
        rel = f"{CHECKPOINT_DIR}/step-{self.step:06d}.safetensors"
        (self.run_dir / rel).write_bytes(b"\0" * 16)
        self.emit(CheckpointEvent(t=self.t, step=self.step, path=rel))

    def status(self, status: str, message: str = "") -> None:
        self.emit(StatusEvent(t=self.t, status=status, step=self.step, message=message))

    def crash(self, message: str = "RuntimeError: loss is NaN at step 12") -> None:
        tb = "Traceback (most recent call last):\n" + "".join(
            f'  File "core/train.py", line {100 + i}, in step_{i}\n    x = f(x)\n' for i in range(30)
        ) + message + "\n"
        self.emit(ErrorEvent(t=self.t, message=message, traceback=tb, step=self.step))
        self.status("failed", message)
        self.unlock()

    def finish(self) -> None:
        self.status("done")
        self.unlock()

    def close(self) -> None:
        self._fh.close()


def make_run(root: Path, name: str, steps: int, *, done: bool = True, **kw) -> FakeRun:
    run = FakeRun(root / name, **kw)
    run.status("running")
    run.advance(steps)
    run.checkpoint()
    if done:
        run.finish()
    run.close()
    return run


def dead_pid() -> int:
    """A pid that is not running (a reaped child's)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _main() -> None:  # pragma: no cover - manual use: python -m tests.tui.fake_run DIR
    import sys

    run = FakeRun(Path(sys.argv[1]), iterations=10_000, lock_pid=os.getpid())
    run.status("running")
    while run.step < run.iterations:
        run.advance(1, samples=run.step % 50 == 0)
        time.sleep(0.05)
    run.finish()


if __name__ == "__main__":  # pragma: no cover
    _main()
