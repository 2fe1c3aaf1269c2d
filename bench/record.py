"""Where a benchmark's figures go: appended to a markdown file under bench/ with date, machine, command and load.

Timings on a shared machine are only comparable next to the load they were taken under, so every
entry records the 1-minute load average before and after the measurement.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{platform.node()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH_DIR)
        # results files (*.md) are what the benchmarks write: not a change to the code measured
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!*.md"],
                               capture_output=True, text=True, cwd=BENCH_DIR.parent).stdout.strip()
        return out.stdout.strip() + (" + local changes" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def command() -> str:
    return shlex.join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def append(name: str, title: str, body: list[str], load_before: float) -> Path:
    """Append one dated entry to ``bench/<name>``; returns the path."""
    path = BENCH_DIR / name
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = [f"## {title} ({when})", "", f"`{command()}`", "",
            f"Machine: {machine()}. Code: commit {commit()}. Load average (1 min) before {load_before:.2f}, "
            f"after {load_average():.2f}.", ""]
    text = "\n".join(head + body) + "\n\n"
    new = not path.exists()
    with path.open("a", encoding="utf-8") as f:
        if new:
            f.write(f"# {name.removesuffix('.md').replace('_', ' ')}\n\n")
        f.write(text)
    return path
