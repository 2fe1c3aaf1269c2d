"""`atesc --help` start-up time against `python -c pass`, measured interleaved in one run.

Usage: python bench/cli_startup.py [--repeats 30]   (writes bench/cli_startup.md)
The target (issue 1) is a ratio <= 1.5: help must not import torch, pydantic or Typer.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    atesc = shutil.which("atesc") or str(Path(sys.executable).with_name("atesc"))
    commands = {"python -c pass": [sys.executable, "-c", "pass"], "atesc --help": [atesc, "--help"],
                "atesc run --help (Typer)": [atesc, "run", "--help"]}
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every command alike
        for name, cmd in commands.items():
            times[name].append(_time(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["python -c pass"]
    lines = ["# CLI start-up", "", f"`python bench/cli_startup.py --repeats {args.repeats}` (median of interleaved runs)", "",
             "| command | median ms | ratio to `python -c pass` |", "|---|---|---|"]
    for name, value in med.items():
        lines.append(f"| `{name}` | {value * 1000:.1f} | {value / base:.2f} |")
    text = "\n".join(lines) + "\n"
    Path(__file__).with_name("cli_startup.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
