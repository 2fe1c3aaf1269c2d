"""Fixtures for the TUI tests: deterministic fake run directories, UTC clock, a fake launcher."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tui_helpers import FakeLauncher, populate  # noqa: E402

from core.rundir.summary import forget_cache  # noqa: E402

os.environ["TZ"] = "UTC"
time.tzset()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run ``async def`` tests here with asyncio.run (no pytest-asyncio dependency)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None


@pytest.fixture(autouse=True)
def _fresh_cache():
    forget_cache()
    yield
    forget_cache()


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root


@pytest.fixture
def populated(runs_root: Path) -> tuple[Path, dict[str, Path]]:
    return runs_root, populate(runs_root)


@pytest.fixture
def fake_launcher():
    fl = FakeLauncher()
    yield fl
    fl.kill_all()


