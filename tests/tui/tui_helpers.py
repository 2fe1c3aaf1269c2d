"""Helpers shared by the TUI tests and the benchmark (imported by name: no package needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_run import FakeRun, dead_pid, make_run  # noqa: E402


def populate(root: Path) -> dict[str, Path]:
    """Three finished runs and one crashed one, all deterministic."""
    runs = {
        "sl": make_run(root, "sl-dfq-0001", 60, teacher_kind="sl", atesc=False, seed=0).run_dir,
        "ntl": make_run(root, "ntl-dfq-0002", 70, atesc=False, seed=1).run_dir,
        "atesc": make_run(root, "ntl-atesc-0003", 80, seed=2).run_dir,
    }
    crash = FakeRun(root / "crash-0004", lock_pid=dead_pid(), seed=3)
    crash.status("running")
    crash.advance(12)
    crash.crash()
    crash.close()
    runs["crash"] = crash.run_dir
    # order of "updated" is the order of creation; make it explicit and stable
    for i, p in enumerate(runs.values()):
        os.utime(p, (1_700_000_000 + i, 1_700_000_000 + i))
    return runs


class FakeLauncher:
    """Records calls and starts a harmless long-lived process instead of the trainer."""

    def __init__(self) -> None:
        from atesc_tui.launcher import Launcher

        self.real = Launcher()
        self.started: list[tuple[Path, Path]] = []
        self.resumed: list[Path] = []
        self.stopped: list[Path] = []
        self.procs: dict[Path, subprocess.Popen] = {}

    def start(self, preset: Path, run_dir: Path, overrides=None):
        self.started.append((preset, run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        self.procs[run_dir.resolve()] = proc
        return proc

    def resume(self, run_dir: Path):
        self.resumed.append(run_dir)

    def stop(self, run_dir: Path):
        self.stopped.append(run_dir)
        return 4242

    def alive(self) -> list[Path]:
        return [k for k, p in self.procs.items() if p.poll() is None]

    def exit_code(self, run_dir: Path):
        return None

    def running(self, run_dir: Path) -> bool:
        proc = self.procs.get(Path(run_dir).resolve())
        return proc is not None and proc.poll() is None

    def kill_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


async def wait_for(pilot, predicate, timeout: float = 10.0, step: float = 0.05) -> None:
    """Pause the pilot until ``predicate()`` is true (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - widgets may not exist yet
            pass
        await pilot.pause(step)
    assert predicate(), "condition not reached in time"


SNAP_ROOT = Path("/tmp/atesc-tui-snapshots/runs")


def snapshot_root() -> Path:
    """A fixed path so that paths shown on screen are identical on every machine."""
    if SNAP_ROOT.exists():
        shutil.rmtree(SNAP_ROOT)
    SNAP_ROOT.mkdir(parents=True)
    populate(SNAP_ROOT)
    return SNAP_ROOT


def rendered(widget) -> str:
    """Plain text of a Static-like widget's current content."""
    from rich.console import Console

    from rich.text import Text

    content = widget.content
    if isinstance(content, str):
        return Text.from_markup(content).plain
    console = Console(width=200, record=True, color_system=None)
    console.print(content)
    return console.export_text()
