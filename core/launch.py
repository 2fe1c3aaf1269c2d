"""Start N worker processes of one run with torchrun's environment contract, and supervise them.

``atesc run PRESET --nproc N`` is this launcher in front of N copies of the same command; the
workers are what ``torchrun --nproc-per-node N -m atesc_tui.cli run PRESET --run-dir D`` would
start (that works too, for several nodes). The launcher owns what torchrun would not do the way
a user expects:

- a signal (Ctrl-C, SIGTERM, the TUI's stop) reaches every worker; the workers agree on the step
  to stop at, rank 0 checkpoints, and the launcher exits 130 like a single-process run;
- when one worker dies, the others are stopped (SIGTERM, then SIGKILL after ``grace`` seconds)
  and the launcher exits 1: nothing is half-written, since rank 0 alone writes, atomically;
- otherwise it exits with rank 0's code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from core.threads import RUNS_ENV, env_int

EXIT_FAIL, EXIT_INTERRUPTED = 1, 130


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(rank: int, nproc: int, port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONUNBUFFERED="1")  # fmt: skip
    # Automatic thread counts divide the free cores between the runs launched together: N workers.
    env[RUNS_ENV] = str((env_int(RUNS_ENV, env) or 1) * nproc)
    return env


def run_workers(argv: Sequence[str], nproc: int, *, grace: float = 30.0, poll: float = 0.1) -> int:
    """Run ``python -m atesc_tui.cli ARGV`` as ``nproc`` ranks; return the exit code for the whole run."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "atesc_tui.cli", *argv], env=worker_env(r, nproc, port))
             for r in range(nproc)]  # fmt: skip
    signalled: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        signalled.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        failed_at: float | None = None
        while any(p.poll() is None for p in procs):
            codes = [p.poll() for p in procs]
            broken = any(c not in (None, 0, EXIT_INTERRUPTED) for c in codes)
            if broken and failed_at is None:
                # A worker died: its peers are blocked in (or about to enter) a collective with it.
                failed_at = time.monotonic()
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(poll)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.wait() for p in procs]
    if any(c not in (0, EXIT_INTERRUPTED) for c in codes):
        # Rank 0's own error code (2: bad input) when it has one; a killed worker counts as a failure.
        return codes[0] if codes[0] > 0 and codes[0] != EXIT_INTERRUPTED else EXIT_FAIL
    if EXIT_INTERRUPTED in codes or signalled:
        return EXIT_INTERRUPTED
    return 0
