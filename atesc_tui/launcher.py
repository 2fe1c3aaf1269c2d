"""Start, stop and resume trainer processes. Runs are separate processes that outlive the app.

The trainer is the headless CLI (``python -m atesc_tui.cli run|resume ... --json``) in its own
session, writing stdout/stderr to ``RUN_DIR/stdout.log``; the app only reads the run directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from core.rundir import STDOUT_LOG, read_lock
from core.threads import RUNS_ENV


class Launcher:
    """Owns the processes this app started (so quitting can warn about them)."""

    def __init__(self, python: str | None = None, cli_module: str = "atesc_tui.cli") -> None:
        self.python = python or sys.executable
        self.cli_module = cli_module
        self.procs: dict[Path, subprocess.Popen[bytes]] = {}
        self.exit_codes: dict[Path, int] = {}  # launched processes that have ended

    def _spawn(self, args: list[str], run_dir: Path) -> subprocess.Popen[bytes]:
        # The runner accepts an existing RUN_DIR without config.toml, so the log can live inside it.
        run_dir.mkdir(parents=True, exist_ok=True)
        log = open(run_dir / STDOUT_LOG, "ab")  # noqa: SIM115 - handed to the child
        try:
            env = dict(os.environ)
            env.setdefault("PYTHONUNBUFFERED", "1")
            # Divide the cores between the runs this app has going (auto run.threads reads it).
            env[RUNS_ENV] = str(len(self.alive()) + 1)
            proc = subprocess.Popen(
                [self.python, "-m", self.cli_module, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        finally:
            log.close()
        key = run_dir.resolve()
        self.exit_codes.pop(key, None)
        self.procs[key] = proc
        return proc

    def start(self, preset: Path, run_dir: Path, overrides: list[str] | None = None, nproc: int = 1) -> subprocess.Popen[bytes]:
        """``nproc`` > 1: a data-parallel run (``atesc run --nproc``); stopping it signals rank 0, which
        stops every rank at the same step."""
        args = ["run", str(preset), "--run-dir", str(run_dir), "--json"] + (["--nproc", str(nproc)] if nproc > 1 else [])
        for item in overrides or []:
            args += ["--set", item]
        return self._spawn(args, run_dir)

    def resume(self, run_dir: Path) -> subprocess.Popen[bytes]:
        return self._spawn(["resume", str(run_dir), "--json"], run_dir)

    @staticmethod
    def stop(run_dir: Path) -> int | None:
        """SIGINT to the run's owner (from ``run.lock``); the trainer checkpoints and exits 130."""
        lock = read_lock(Path(run_dir))
        if lock is None or not lock.alive:
            return None
        try:
            os.kill(lock.pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            return None
        return lock.pid

    def poll(self) -> None:
        """Reap finished children so they do not linger as zombies."""
        for key, proc in list(self.procs.items()):
            rc = proc.poll()
            if rc is not None:
                del self.procs[key]
                self.exit_codes[key] = rc

    def alive(self) -> list[Path]:
        """Run directories whose process this app launched and that are still running."""
        self.poll()
        return list(self.procs)

    def exit_code(self, run_dir: Path) -> int | None:
        """Exit status of a process this app launched for ``run_dir``, once it has ended."""
        self.poll()
        return self.exit_codes.get(Path(run_dir).resolve())

    def running(self, run_dir: Path) -> bool:
        """True while a process this app launched for ``run_dir`` has not exited."""
        self.poll()
        return Path(run_dir).resolve() in self.procs
