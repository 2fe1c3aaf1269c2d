"""Thread policy: auto ``run.threads`` never exceeds the free cores, launchers divide the cores, and
the CLI sets the OpenMP wait policy before torch is loaded."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core import threads as th
from core.experiments.bench import Bench, Suite
from core.rundir.events import EVENTS_FILE
from tests.conftest import REPO, TINY_PRESET


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("runs", [1, 2, 3, 5])
def test_pick_threads_never_exceeds_free_cores_or_the_runs_share(cores: int, runs: int) -> None:
    for quarter in range(0, 4 * cores + 5):
        busy = quarter / 4
        free = max(1, math.floor(cores - busy + th.BUSY_THRESHOLD))
        picked = th.pick_threads(cores, busy, runs=runs)
        assert 1 <= picked <= free
        assert picked <= max(1, cores // runs)
        assert th.pick_threads(cores, busy, runs=runs, cap=1) == 1


def test_pick_threads_values() -> None:
    assert th.pick_threads(2, 0.0) == 2  # quiet machine: every core
    assert th.pick_threads(2, 0.3) == 2  # a mostly idle neighbour does not cost a core
    assert th.pick_threads(2, 0.9) == 1  # one busy process: one thread
    assert th.pick_threads(2, 2.0) == 1  # saturated: still one
    assert th.pick_threads(2, 0.0, runs=2) == 1
    assert th.pick_threads(2, 0.0, runs=3) == 1
    assert th.pick_threads(8, 2.0, runs=2) == 4
    assert th.pick_threads(8, 5.0, runs=2) == 3
    assert th.pick_threads(8, 0.0, cap=3) == 3


def test_others_busy_removes_own_use() -> None:
    a = th.CpuSnapshot(busy=100.0, own=10.0, wall=50.0)
    b = th.CpuSnapshot(busy=103.0, own=12.0, wall=52.0)  # 3 busy core-seconds in 2 s, 2 of them ours
    assert th.others_busy(a, b) == pytest.approx(0.5)
    assert th.others_busy(a, a) == 0.0
    assert th.others_busy(a, th.CpuSnapshot(busy=100.5, own=11.0, wall=51.0)) == 0.0  # clock granularity: not negative


def _fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: list[int]) -> Path:
    stat = tmp_path / "stat"
    monkeypatch.setattr(th, "_PROC_STAT", stat)
    monkeypatch.setattr(th, "_CGROUP_CPU_MAX", tmp_path / "no-cgroup")
    monkeypatch.setattr(th, "usable_cpus", lambda: cpus)
    return stat


def _stat(ticks: dict[int, tuple[int, int]]) -> str:
    """/proc/stat text with (busy user ticks, idle ticks) per cpu."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0" for i, (busy, idle) in ticks.items()]
    return "\n".join(lines) + "\nintr 0\n"


def test_snapshot_counts_busy_ticks_of_usable_cpus_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = _fake_proc(tmp_path, monkeypatch, [0, 1])
    hz = os.sysconf("SC_CLK_TCK")
    stat.write_text(_stat({0: (hz, 5), 1: (2 * hz, 7), 2: (50 * hz, 0)}))  # cpu2 is not ours
    snap = th.snapshot()
    assert snap is not None and snap.busy == pytest.approx(3.0)


def test_governor_divides_cores_between_concurrent_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = _fake_proc(tmp_path, monkeypatch, [0, 1, 2, 3])
    stat.write_text(_stat({i: (0, 0) for i in range(4)}))
    assert th.ThreadGovernor.start(window_s=0, environ={}).threads == 4
    assert th.ThreadGovernor.start(window_s=0, environ={th.RUNS_ENV: "2"}).threads == 2
    assert th.ThreadGovernor.start(window_s=0, environ={th.RUNS_ENV: "3", "OMP_NUM_THREADS": "1"}).threads == 1
    assert th.ThreadGovernor.start(window_s=0, environ={th.RUNS_ENV: "junk"}).threads == 4  # a hint, not input


def test_governor_recheck_follows_other_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = _fake_proc(tmp_path, monkeypatch, [0, 1])
    hz = os.sysconf("SC_CLK_TCK")
    clock = iter([0.0, 0.0, 10.0, 20.0])
    monkeypatch.setattr(th.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(th.os, "times", lambda: os.times_result((0.0, 0.0, 0.0, 0.0, 0.0)))
    stat.write_text(_stat({0: (0, 0), 1: (0, 0)}))
    gov = th.ThreadGovernor.start(window_s=0, environ={})
    assert gov.threads == 2
    stat.write_text(_stat({0: (10 * hz, 0), 1: (0, 0)}))  # another process kept one core busy for 10 s
    assert gov.recheck() == 1
    stat.write_text(_stat({0: (10 * hz, 0), 1: (0, 0)}))  # ...and then ended
    assert gov.recheck() == 2


def test_set_passive_wait_keeps_a_users_choice() -> None:
    env: dict[str, str] = {}
    th.set_passive_wait(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    th.set_passive_wait(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"


def test_cli_sets_wait_policy_before_torch_and_light_commands_import_no_torch() -> None:
    """``validate`` needs torch: the policy must already be in the environment when it loads.
    ``presets`` needs none and must not load it."""
    code = (
        "import importlib.abc, os, sys\n"
        "seen = {}\n"
        "class Watch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' and 'torch' not in seen:\n"
        "            seen['torch'] = os.environ.get('OMP_WAIT_POLICY')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from atesc_tui.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('TORCH', seen.get('torch', 'not imported'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    light = subprocess.run([sys.executable, "-c", code, "presets"], capture_output=True, text=True, cwd=REPO, env=env)
    assert light.stdout.strip().splitlines()[-1] == "TORCH not imported", light.stderr
    heavy = subprocess.run([sys.executable, "-c", code, "validate", "quickstart"], capture_output=True, text=True,
                           cwd=REPO, env=env)
    assert heavy.stdout.strip().splitlines()[-1] == "TORCH PASSIVE", heavy.stdout + heavy.stderr


def test_launcher_tells_each_run_how_many_share_the_cores(tmp_path: Path) -> None:
    from atesc_tui.launcher import Launcher

    fake = tmp_path / "fake_cli.py"  # records the variable, then waits until told to exit
    fake.write_text(
        "import os, sys, time\nfrom pathlib import Path\n"
        "rd = Path(sys.argv[sys.argv.index('--run-dir') + 1])\n"
        f"(rd / 'runs.txt').write_text(os.environ['{th.RUNS_ENV}'])\n"
        "while not (rd / 'go').exists():\n    time.sleep(0.05)\n"
    )
    launcher = Launcher(cli_module="fake_cli")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env_path}"
    try:
        dirs = [tmp_path / "a", tmp_path / "b"]
        procs = []
        for rd in dirs:
            procs.append(launcher.start(Path("p.toml"), rd))
            while not (rd / "runs.txt").exists():  # wait for the state, not a duration
                assert procs[-1].poll() is None, (rd / "stdout.log").read_text()
                threading.Event().wait(0.05)
        assert [(rd / "runs.txt").read_text() for rd in dirs] == ["1", "2"]
    finally:
        os.environ["PYTHONPATH"] = env_path
        for rd in dirs:
            (rd / "go").touch()
        for p in procs:
            p.wait(timeout=30)


CLI = [sys.executable, "-m", "atesc_tui.cli"]


def test_parallel_bench_runs_jobs_cells_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base.toml"
    base.write_text('[run]\nname = "x"\n')
    b = Bench(Suite(base=str(base), teachers=["sl"], atesc=[False, True], seeds=[0, 1], jobs=2), tmp_path / "out",
              runner=CLI)
    both_running = threading.Barrier(2, timeout=60)  # breaks (and fails the test) if cells ran one by one
    ran: list[str] = []

    def fake_run(self: Bench, cell, *, resume: bool) -> None:  # noqa: ANN001
        both_running.wait()
        ran.append(cell.id)
        rd = self.run_dir(cell)
        rd.mkdir(parents=True)
        (rd / EVENTS_FILE).write_text(json.dumps({"v": 1, "t": 0, "kind": "status", "status": "done", "step": 1}) + "\n")

    monkeypatch.setattr(Bench, "_run_subprocess", fake_run)
    b.run()
    assert sorted(ran) == sorted(c.id for c in b.cells)


@pytest.mark.timeout(300)
def test_parallel_bench_cells_divide_the_cores(tmp_path: Path, data_root: Path) -> None:
    """Two real tiny cells at once with auto threads: each starts with at most half the cores."""
    preset = tmp_path / "auto.toml"
    preset.write_text(TINY_PRESET.replace("threads = 1\n", ""))
    suite = Suite(base=str(preset), teachers=["ntl-target"], atesc=[False], seeds=[0, 1], jobs=2,
                  set=["dfkd.iterations=2"])
    payload = Bench(suite, tmp_path / "out", runner=CLI).run()
    assert [c["status"] for c in payload["cells"]] == ["done", "done"]
    for cell in payload["cells"]:
        lines = (Path(cell["run_dir"]) / EVENTS_FILE).read_text().splitlines()
        start = next(json.loads(line) for line in lines if json.loads(line)["kind"] == "start")
        assert 1 <= start["threads"] <= max(1, th.core_count() // 2)


def test_start_event_records_pinned_threads(reference: tuple[Path, Path]) -> None:
    _, run_dir = reference
    events = [json.loads(line) for line in (run_dir / EVENTS_FILE).read_text().splitlines()]
    assert [e["threads"] for e in events if e["kind"] == "start"] == [1]
