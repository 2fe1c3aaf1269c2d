"""The whole loop with the real trainer: launch a tiny run from the form, watch the monitor's
numbers change, stop it (checkpoint), resume it to the end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tui_helpers import rendered, wait_for

from atesc_tui.app import AtescApp
from atesc_tui.screens.confirm import ConfirmScreen
from atesc_tui.screens.monitor import MonitorScreen
from atesc_tui.screens.new_run import NewRunScreen
from atesc_tui.widgets.config_form import ConfigForm
from atesc_tui.widgets.run_header import RunHeader
from core.rundir.events import read_events
from core.rundir.summary import summarize_run

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "presets" / "quickstart.toml"

TINY = {
    "teacher.epochs": 1,
    "teacher.width": 8,
    "student.width": 8,
    "generator.width": 8,
    "dfkd.iterations": 80,
    "dfkd.batch_size": 16,
    "dfkd.student_steps": 1,
    "data.eval_samples": 100,
    "run.eval_every": 4,
    "run.checkpoint_every": 4,
    "run.threads": 1,
    "run.name": "tui-real",
}


@pytest.mark.timeout(600)
@pytest.mark.skipif(not QUICKSTART.exists(), reason="no quickstart preset")
async def test_launch_watch_stop_resume_a_real_run(runs_root):
    app = AtescApp(runs_root, presets=[QUICKSTART])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen.query_one(ConfigForm)
        for key, value in TINY.items():
            form.set_value(key, value)
        await wait_for(pilot, lambda: form.config.dfkd.iterations == 80 and form.config.run.name == "tui-real")
        assert not form.errors
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        monitor = app.screen
        run_dir = monitor.run_dir
        assert run_dir.parent == runs_root and (run_dir / "stdout.log").exists()
        hist = monitor.reader.history

        def header() -> str:
            return rendered(monitor.query_one(RunHeader))

        def shown_step() -> int:
            m = re.search(r"step (\d+)/80", header())
            return int(m.group(1)) if m else -1

        # teacher training (1 epoch, or the cached teacher) then the first iterations: the numbers
        # on screen move as the event file grows
        await wait_for(pilot, lambda: shown_step() >= 1 and hist.series["student_acc_id"].last is not None, timeout=300)
        first_step = shown_step()
        assert "teacher " in header() and "teacher -/" not in header()
        await wait_for(pilot, lambda: shown_step() >= first_step + 2, timeout=120)
        # stop: SIGINT, the trainer checkpoints and reports 'interrupted'
        await wait_for(pilot, lambda: hist.last_checkpoint is not None, timeout=120)
        await pilot.press("s")
        await wait_for(pilot, lambda: hist.status == "interrupted", timeout=120)
        await wait_for(pilot, lambda: app.launcher.exit_code(run_dir) is not None, timeout=60)
        assert app.launcher.exit_code(run_dir) == 130
        ckpts = sorted((run_dir / "checkpoints").glob("*.safetensors"))
        assert ckpts, "stopping must leave a checkpoint"
        stopped_at = hist.step
        assert stopped_at < 80
        await wait_for(pilot, lambda: "interrupted" in header(), timeout=10)
        assert summarize_run(run_dir).status == "interrupted"
        # resume from the checkpoint, to the end
        await pilot.press("r")
        await wait_for(pilot, lambda: hist.status == "done", timeout=300)
        await wait_for(pilot, lambda: "step 80/80" in header() and " done " in f" {header()}", timeout=10)
        events, skipped = read_events(run_dir / "events.jsonl")
        starts = [e for e in events if e.kind == "start"]
        assert len(starts) == 2 and starts[1].resumed and starts[1].step <= stopped_at
        assert skipped == 0
        await wait_for(pilot, lambda: app.launcher.exit_code(run_dir) is not None, timeout=60)
        assert app.launcher.exit_code(run_dir) == 0
        summary = summarize_run(run_dir)
        assert (summary.status, summary.step, summary.alive) == ("done", 80, False)
        await pilot.press("escape")
        await pilot.press("q")
    assert not app.is_running
