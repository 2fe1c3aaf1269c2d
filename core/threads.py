"""How many torch CPU threads a run uses: never more than the cores other processes leave free.

Why: OpenMP threads meet at a barrier after every parallel region. With more threads than free
cores, a thread that arrives first spins while the one it waits for is descheduled; on the 2-core
machine a 2-thread step next to one busy process took 14x longer (bench/side_by_side.md). So:

- ``run.threads`` unset means *auto*: the cores not busy with other processes, divided by the
  runs launched together (``ATESC_CONCURRENT_RUNS``, set by the app's launcher and by
  ``atesc bench --jobs``), capped by ``OMP_NUM_THREADS`` when the user set it;
- an auto run re-checks at every evaluation (:class:`ThreadGovernor`), so a run started alone
  gives a core back when a second one starts, and takes it again when that one ends;
- the CLI sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is loaded (:func:`set_passive_wait`),
  so threads that still end up sharing a core sleep at barriers instead of spinning.

This module imports no torch at module level: the CLI entry uses it before torch exists.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

RUNS_ENV = "ATESC_CONCURRENT_RUNS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
# A core counts as free while other processes use less than this share of it.
BUSY_THRESHOLD = 0.5
_PROC_STAT = Path("/proc/stat")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def set_passive_wait(environ: dict[str, str] | None = None) -> None:
    """Idle OpenMP threads sleep instead of spinning (unless the user chose a policy).

    Must run before torch is imported: libgomp reads the variable once, when it is loaded.
    """
    env = os.environ if environ is None else environ
    env.setdefault(WAIT_POLICY_ENV, "PASSIVE")


def usable_cpus() -> list[int]:
    """CPU ids this process may run on (its affinity set)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def core_count(cpus: list[int] | None = None) -> int:
    """Usable cores: the affinity set, further limited by a cgroup CPU quota (containers)."""
    n = len(cpus if cpus is not None else usable_cpus())
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def env_int(name: str, environ: dict[str, str] | None = None) -> int | None:
    """A positive integer from the environment, or None when unset or malformed (a hint, not input)."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 1 else None


def pick_threads(cores: int, others_busy: float, *, runs: int = 1, cap: int | None = None) -> int:
    """Threads for one of ``runs`` runs launched together, when other processes keep ``others_busy``
    cores busy. Never more than the free cores, never less than one."""
    free = max(1, math.floor(cores - others_busy + BUSY_THRESHOLD))
    threads = min(free, max(1, cores // max(1, runs)))
    if cap is not None:
        threads = min(threads, cap)
    return max(1, threads)


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU seconds: busy on ``cpus`` (all processes) and used by this process."""

    busy: float
    own: float
    wall: float


def snapshot(cpus: list[int] | None = None) -> CpuSnapshot | None:
    """Read /proc/stat; None where it does not exist (then only the core count limits threads)."""
    wanted = {f"cpu{i}" for i in (cpus if cpus is not None else usable_cpus())}
    try:
        lines = _PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy
            values = [int(v) for v in fields[1:9]]
            ticks += sum(values) - values[3] - values[4]
    t = os.times()
    return CpuSnapshot(busy=ticks / os.sysconf("SC_CLK_TCK"), own=t.user + t.system, wall=time.monotonic())


def others_busy(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """Cores kept busy by other processes between two snapshots (this process's own use removed)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / wall)


@dataclass
class ThreadGovernor:
    """The auto policy of one run: picks its threads at start and re-picks them when asked."""

    cores: int
    runs: int = 1
    cap: int | None = None
    threads: int = 1
    _last: CpuSnapshot | None = None

    @classmethod
    def start(cls, window_s: float = 0.25, environ: dict[str, str] | None = None) -> ThreadGovernor:
        """Measure the other processes' load for ``window_s`` and pick the starting thread count."""
        cpus = usable_cpus()
        gov = cls(cores=core_count(cpus), runs=env_int(RUNS_ENV, environ) or 1,
                  cap=env_int("OMP_NUM_THREADS", environ))
        before = snapshot(cpus)
        if before is not None and window_s > 0:
            time.sleep(window_s)
        gov._last = snapshot(cpus)
        busy = others_busy(before, gov._last) if before is not None and gov._last is not None else 0.0
        gov.threads = pick_threads(gov.cores, busy, runs=gov.runs, cap=gov.cap)
        return gov

    def recheck(self) -> int:
        """Re-pick from the load since the last check. A run launched with others keeps its share
        as a ceiling: the launcher divided the cores, other runs may start any moment."""
        now = snapshot()
        if now is None or self._last is None:
            return self.threads
        busy = others_busy(self._last, now)
        self._last = now
        self.threads = pick_threads(self.cores, busy, runs=self.runs, cap=self.cap)
        return self.threads


def apply_threads(requested: int | None) -> ThreadGovernor | None:
    """Set torch's thread count: ``requested`` when given, else the auto policy (returned, so the
    caller can :meth:`ThreadGovernor.recheck` it later)."""
    import torch

    if requested:
        torch.set_num_threads(requested)
        return None
    governor = ThreadGovernor.start()
    torch.set_num_threads(governor.threads)
    return governor
