"""Shared fixtures: one dataset/teacher cache per test session and a tiny, fast run preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A run small enough for tests: tiny teacher (1 epoch), tiny student/generator, few iterations.
TINY_PRESET = """\
[data]
id_domain = "mnist"
ood_domain = "patched:mnist"
eval_samples = 200

[teacher]
kind = "ntl-target"
width = 8
epochs = 1

[student]
width = 8

[generator]
width = 8
nz = 16

[dfkd]
method = "dfq"
iterations = 6
batch_size = 16
student_steps = 2

[atesc]
enabled = true
split = "quantile"  # always splits a batch (the default threshold rule may keep a tiny teacher's batch whole)

[run]
name = "tiny"
seed = 0
device = "cpu"
threads = 1
eval_every = 2
checkpoint_every = 2
"""


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-wide data/teacher cache; shared with subprocesses through ATESC_DATA__ROOT."""
    root = Path(os.environ.get("ATESC_TEST_DATA_ROOT") or tmp_path_factory.mktemp("data"))
    os.environ["ATESC_DATA__ROOT"] = str(root)
    return root


@pytest.fixture
def tiny_preset(tmp_path: Path, data_root: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_PRESET)
    return path


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, Path]:
    """(preset, run_dir) of one uninterrupted tiny run, shared read-only by every test that compares
    against it (resume exactness, faults, bad inputs); it also caches the tiny teacher."""
    base = tmp_path_factory.mktemp("reference")
    preset = base / "tiny.toml"
    preset.write_text(TINY_PRESET)
    run_dir = base / "run"
    proc = atesc("run", str(preset), "--run-dir", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    return preset, run_dir


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start the real CLI without waiting (for tests that signal or kill it)."""
    return subprocess.Popen([sys.executable, "-m", "atesc_tui.cli", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or os.environ.copy())


def atesc(*args: str, timeout: float = 300, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (so exit codes and stderr are what a user sees)."""
    return subprocess.run([sys.executable, "-m", "atesc_tui.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=kwargs.pop("cwd", REPO), **kwargs)  # type: ignore[arg-type]
