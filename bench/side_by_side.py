"""N training runs started at once vs one alone, under the old thread policy and the new one.

Usage: python bench/side_by_side.py [--runs 1,2,3] [--seconds 30] [--rounds 1] [--policies old,new,hand]
                                    [--preset quickstart] [--set k=v ...]

Every configuration launches N real ``atesc run PRESET --json`` processes at the same moment, lets
them train side by side for ``--seconds`` once each has done a few steps, then stops them, and reads
their ``train`` events. Throughput is measured only over the window in which all N were training,
so start-up (imports, teacher load) does not count. Policies:

- ``old``: what a run did before core/threads.py: ``run.threads = 2`` (the quickstart preset),
  torch imported without OMP_WAIT_POLICY (libgomp's default spin-then-sleep);
- ``new``: the launcher's way (app, ``atesc bench --jobs``): ``run.threads`` unset, the CLI entry
  (PASSIVE wait policy), ``ATESC_CONCURRENT_RUNS=N``;
- ``hand``: N runs started by hand in N terminals: as ``new`` but nobody divides the cores, so each
  run relies on measuring the free cores (and re-checking them at each evaluation).

Prints per-run and total samples/s and each run's ratio to the same policy's run alone, and appends
them to bench/side_by_side.md. Targets (issue 14): 2 runs >= 0.45x alone each; 3 runs >= 0.25x.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record import append, load_average  # noqa: E402
from core.threads import RUNS_ENV  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The entry as it was before the policy: straight into the commands, nothing set before torch loads.
OLD_ENTRY = "import sys; from atesc_tui.commands import app; app(args=sys.argv[1:], prog_name='atesc')"
WARMUP_STEPS = 3


def launch(policy: str, n: int, preset: str, seconds: float, sets: list[str], workdir: Path) -> list[list[dict]]:
    """Start N runs at once; once every one has finished a few steps, let them train side by side for
    ``seconds``, then stop them all (SIGTERM: each saves a checkpoint and exits). Their event streams."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", RUNS_ENV)}
    overrides = ["run.device=cpu", "atesc.enabled=false", "dfkd.iterations=100000", *sets]
    if policy == "old":
        entry, overrides = ["-c", OLD_ENTRY], [*overrides, "run.threads=2"]
    else:
        entry = ["-m", "atesc_tui.cli"]
        if policy == "new":
            env[RUNS_ENV] = str(n)
    procs = []
    for i in range(n):
        args = [sys.executable, *entry, "run", preset, "--json", "--run-dir", str(workdir / f"{policy}-{n}-{i}")]
        for o in overrides:  # one seed: another would train (and cache) another teacher first
            args += ["--set", o]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO))
    streams: list[list[dict]] = [[] for _ in procs]

    def read(i: int) -> None:
        assert procs[i].stdout is not None
        for line in procs[i].stdout:
            if line.startswith("{"):
                streams[i].append(json.loads(line))

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(n)]
    for r in readers:
        r.start()
    try:
        # wait for the state (every run past its warm-up steps), not for a guessed duration
        while not all(sum(e["kind"] == "train" for e in s) > WARMUP_STEPS for s in streams):
            failed = [p for p in procs if p.poll() is not None]
            if failed:
                err = failed[0].stderr.read() if failed[0].stderr else ""
                raise SystemExit(f"a run ended early (exit {failed[0].returncode}): {err.strip()[-400:]}")
            time.sleep(0.2)
        time.sleep(seconds)
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=120)
    finally:
        for p in procs:  # on an error or Ctrl-C, do not leave runs training behind
            if p.poll() is None:
                p.kill()
                p.wait()
    for r in readers:
        r.join(timeout=10)
    return streams


def throughput(streams: list[list[dict]]) -> tuple[list[int], float, list[str]]:
    """Steps each run finished inside the window where all were training; window seconds; threads used."""
    trains = [[e for e in s if e["kind"] == "train"][WARMUP_STEPS:] for s in streams]
    threads = []
    for s in streams:  # at start, then after each change the run reported ("threads 2 -> 1 ...")
        seq = [str(next((e.get("threads") for e in s if e["kind"] == "start"), "?"))]
        seq += [e["message"].split()[3] for e in s
                if e["kind"] == "status" and (e.get("message") or "").startswith("threads ")]
        threads.append("->".join(seq))
    start = max(t[0]["t"] for t in trains)
    end = min(t[-1]["t"] for t in trains)
    if end <= start:
        raise SystemExit("the runs did not overlap: raise --seconds")
    # a step whose event lands in the window finished in it; the first one started before it
    counts = [sum(1 for e in t if start < e["t"] <= end) for t in trains]
    return counts, end - start, threads


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill runs the clean-up too
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="1,2,3")
    parser.add_argument("--seconds", type=float, default=30.0, help="side-by-side training time per configuration")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--policies", default="old,new,hand")
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    ns = [int(x) for x in args.runs.split(",")]
    policies = args.policies.split(",")
    if 1 not in ns:
        ns = [1, *ns]
    sets = ["run.eval_every=20", "run.checkpoint_every=100000", *args.sets]
    from core.config import load_config
    from core.presets import resolve_preset

    batch = load_config(resolve_preset(args.preset), sets).dfkd.batch_size
    load0 = load_average()
    # per (policy, n): list over rounds of (per-run samples/s list, threads list)
    found: dict[tuple[str, int], list[tuple[list[float], list[str]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in ns:
                for policy in policies if r % 2 == 0 else policies[::-1]:  # alternate order: drift hits all alike
                    workdir = Path(tmp) / f"r{r}"
                    counts, window, threads = throughput(launch(policy, n, args.preset, args.seconds, sets, workdir))
                    rates = [c * batch / window for c in counts]
                    found.setdefault((policy, n), []).append((rates, threads))
                    print(f"round {r} {policy:4s} n={n}: " + ", ".join(f"{x:.1f}" for x in rates)
                          + f" samples/s (threads {threads}, window {window:.1f} s, load {load_average():.2f})", flush=True)
    lines = [f"Preset `{args.preset}` (ATEsc off), {args.seconds:.0f} s side by side, throughput inside the window where "
             f"all N runs train, median over {args.rounds} round(s).", "",
             "| policy | N | threads (start->changes) | per-run samples/s | total | each / alone (min) | total / alone |",
             "|---|---|---|---|---|---|---|"]
    verdicts = []
    for policy in policies:
        alone = statistics.median(rs[0][0] for rs in found[(policy, 1)])
        for n in ns:
            rounds = found[(policy, n)]
            per_run = [statistics.median(r[0][i] for r in rounds) for i in range(n)]
            total = sum(per_run)
            worst = min(per_run) / alone
            lines.append(f"| {policy} | {n} | {' '.join(rounds[-1][1])} | {', '.join(f'{x:.1f}' for x in per_run)} | {total:.1f} "
                         f"| {worst:.2f} | {total / alone:.2f} |")
            if n in (2, 3):
                target = 0.45 if n == 2 else 0.25
                verdicts.append(f"{policy}, {n} runs: worst run {worst:.2f}x alone (target >= {target}: "
                                f"{'met' if worst >= target else 'NOT met'})")
    body = [*lines, "", *[f"- {v}" for v in verdicts]]
    print("\n".join(body))
    print(f"appended to {append('side_by_side.md', 'Runs side by side vs alone', body, load0)}")


if __name__ == "__main__":
    main()
