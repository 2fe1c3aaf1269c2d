"""The shipped quickstart, end to end: Ctrl-C after its first checkpoint, resume, finish, extend.

Its real config is what matters (the 0x80 header-length bug only showed with the quickstart's own
checkpoint header), so the preset runs as shipped; only the cache location comes from the env.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.rundir.events import read_events
from tests.conftest import atesc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _statuses(root: Path) -> list[tuple[str, int]]:
    proc = atesc("runs", str(root / "runs"), "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return [(r["status"], r["step"]) for r in map(json.loads, proc.stdout.splitlines())]


def test_quickstart_interrupted_resumed_and_extended(tmp_path: Path, data_root: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "atesc_tui.cli", "run", "quickstart", "--json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for the first checkpoint (the teacher may be trained first)
        if json.loads(line).get("kind") == "checkpoint":
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    first = run_dir / "checkpoints"
    assert any(first.glob("*.safetensors"))

    done = atesc("resume", str(run_dir), "--json", timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    events, _ = read_events(run_dir / "events.jsonl")
    iterations = next(e for e in events if e.kind == "start").iterations
    assert _statuses(tmp_path) == [("done", iterations)]

    extended = atesc("resume", str(run_dir), "--iterations", str(iterations + 2), "--json", timeout=600, cwd=tmp_path)
    assert extended.returncode == 0, extended.stderr
    assert _statuses(tmp_path) == [("done", iterations + 2)]
