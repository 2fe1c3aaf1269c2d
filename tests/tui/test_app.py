"""Pilot tests driving the real app on fake, deterministic run directories."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tui_helpers import rendered, wait_for
from fake_run import FakeRun
from textual.widgets import Input, Select, Switch

from atesc_tui.app import AtescApp
from atesc_tui.screens.compare import CompareScreen
from atesc_tui.screens.confirm import ConfirmScreen
from atesc_tui.screens.help import HelpScreen
from atesc_tui.screens.monitor import MonitorScreen
from atesc_tui.screens.new_run import NewRunScreen
from atesc_tui.screens.runs import RunsScreen
from atesc_tui.widgets.config_form import ConfigForm
from atesc_tui.widgets.error_panel import ErrorPanel
from atesc_tui.widgets.metric_chart import MetricChart
from atesc_tui.widgets.run_header import RunHeader
from atesc_tui.widgets.run_table import RunTable
from atesc_tui.widgets.sample_view import SampleView


def table_rows(app) -> dict[str, list[str]]:
    table = app.screen.query_one(RunTable)
    return {row.key.value.rsplit("/", 1)[-1]: [str(c) for c in table.get_row(row.key)] for row in table.ordered_rows}


def header_text(screen) -> str:
    return str(screen.query_one(RunHeader).render())


async def test_runs_table_lists_runs_and_updates_live(runs_root):
    from fake_run import make_run

    make_run(runs_root, "done-run", 30)
    live = FakeRun(runs_root / "live-run", lock_pid=os.getpid(), iterations=100)
    live.status("running")
    live.advance(5)
    app = AtescApp(runs_root, presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 2)
        rows = table_rows(app)
        assert rows["done-run"][4] == "done" and rows["done-run"][5] == "30/100"
        assert rows["done-run"][6] == "28.0%"  # student ID accuracy of the fake run at step 30
        assert rows["live-run"][4] == "running" and rows["live-run"][5] == "5/100"
        live.advance(15)
        await wait_for(pilot, lambda: table_rows(app)["live-run"][5] == "20/100")
        # a run started headless elsewhere appears without any action
        make_run(runs_root, "headless-run", 10)
        await wait_for(pilot, lambda: "headless-run" in table_rows(app))
    live.close()


async def test_monitor_follows_a_growing_event_file(runs_root):
    run = FakeRun(runs_root / "grow", lock_pid=os.getpid(), iterations=100)
    run.status("running")
    run.advance(5)
    app = AtescApp(runs_root, open_run=run.run_dir, presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen) and "step 5/100" in rendered(app.screen.query_one(RunHeader)))
        screen = app.screen
        text = rendered(screen.query_one(RunHeader))
        assert "running" in text and "teacher 93.0%/10.0%" in text and "ATEsc on" in text
        assert "student ID 10.6%" in text  # eval at step 1
        run.advance(25)
        await wait_for(pilot, lambda: "step 30/100" in rendered(screen.query_one(RunHeader)))
        text = rendered(screen.query_one(RunHeader))
        assert "student ID 28.0%" in text and "630 samples/s" in text and "ETA 0m07s" in text
        # wait for the state asserted (data handed over AND drawn), never for a fixed time
        split = screen.query_one("#chart-split", MetricChart)
        await wait_for(pilot, lambda: split.last_points == 60 and len(screen.query_one("#chart-acc", MetricChart).drawn["ID"]) == 4)
        assert split.drawn["fragile"][0] == 100 * run.metrics(1)["split_id_ratio"]  # shown in %
        # samples: the batch grid and its fragile / robust parts, each keeping its aspect ratio
        await pilot.press("2")
        view = screen.query_one(SampleView)
        await wait_for(pilot, lambda: view.path is not None and view.path.name == "step-000030.png")
        assert len(screen.query(".sample-image")) == 3  # the batch, its fragile and its robust part
        run.finish()
        await wait_for(pilot, lambda: " done " in f" {rendered(screen.query_one(RunHeader))}")
    run.close()


async def test_crashed_trainer_shows_error_panel(populated):
    root, runs = populated
    app = AtescApp(root, open_run=runs["crash"], presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ErrorPanel).has_class("-shown"))
        panel = app.screen.query_one(ErrorPanel)
        text = rendered(panel)
        assert "RuntimeError: loss is NaN at step 12" in text
        assert "step_29" in text and "step_0\n" not in text  # the tail, not the head
        assert "failed" in rendered(app.screen.query_one(RunHeader))


async def test_malformed_lines_are_skipped_and_counted(runs_root):
    run = FakeRun(runs_root / "bad", lock_pid=os.getpid())
    run.advance(4)
    run.raw(b"garbage\n{\"v\": 1, \"kind\": \"eval\", \"step\": \"x\"}\n\xff\n")
    run.advance(4)
    app = AtescApp(runs_root, open_run=run.run_dir, presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: "step 8/100" in rendered(app.screen.query_one(RunHeader)))
        assert "3 malformed lines skipped" in rendered(app.screen.query_one(RunHeader))
        run.raw(b"more garbage\n")
        run.advance(1)
        await wait_for(pilot, lambda: "4 malformed lines skipped" in rendered(app.screen.query_one(RunHeader)))
    run.close()


async def test_compare_two_runs(populated):
    root, runs = populated
    app = AtescApp(root, presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 4)
        table = app.screen.query_one(RunTable)
        names = [row.key.value.rsplit("/", 1)[-1] for row in table.ordered_rows]
        # mark the SL and the ATEsc run, then compare
        for target in ("sl-dfq-0001", "ntl-atesc-0003"):
            table.move_cursor(row=names.index(target))
            await pilot.press("space")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        from textual.widgets import DataTable

        cmp_table = screen.query_one("#compare-table", DataTable)
        header = [str(c.label) for c in cmp_table.ordered_columns]
        assert header[1:4] == ["ATEsc", "seed", "teacher"]  # the fields in which the runs differ
        rows = {str(cmp_table.get_row_at(i)[-1]): [str(c) for c in cmp_table.get_row_at(i)] for i in range(cmp_table.row_count)}
        assert set(rows) == {"sl-dfq-0001", "ntl-atesc-0003"}
        assert rows["sl-dfq-0001"][1:4] == ["off", "0", "sl"] and rows["ntl-atesc-0003"][1:4] == ["on", "2", "ntl-target"]
        assert rows["sl-dfq-0001"][header.index("ID acc")] == "46.0%" and rows["ntl-atesc-0003"][header.index("ID acc")] == "62.0%"
        assert rows["sl-dfq-0001"][header.index("Fragile")] == "n/a"
        chart = screen.query_one("#cmp-acc-id", MetricChart)
        assert sorted(s[0] for s in chart._series) == ["ATEsc off, seed 0, teacher sl", "ATEsc on, seed 2, teacher ntl-target"]
        split = screen.query_one("#cmp-split", MetricChart)
        await wait_for(pilot, lambda: "ATEsc off, seed 0, teacher sl" in split.drawn)
        assert np.isnan(split.drawn["ATEsc off, seed 0, teacher sl"]).all()  # no split without ATEsc
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_new_run_form_validates_diffs_and_launches(runs_root, tmp_path, fake_launcher):
    preset = tmp_path / "tiny.toml"
    preset.write_text('[dfkd]\niterations = 50\n[run]\nname = "tiny"\n')
    app = AtescApp(runs_root, launcher=fake_launcher, presets=[preset])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        screen = app.screen
        form = screen.query_one(ConfigForm)
        assert form.built == {"data"}  # the other sections are built when expanded
        for section in ("teacher", "dfkd", "atesc"):
            await form.reveal(section)
        # widgets follow the schema: bool -> Switch, Literal -> Select, int -> integer Input
        assert isinstance(screen.query_one("#f-atesc-enabled"), Switch)
        assert isinstance(screen.query_one("#f-teacher-kind"), Select)
        iters = screen.query_one("#f-dfkd-iterations", Input)
        assert iters.type == "integer" and iters.value == "50"
        assert ">= 1, <= 10000000" in screen.query_one("#row-dfkd-iterations").tooltip
        # inline validation: 0 is below the bound
        iters.value = "0"
        # the row shows the error at once; the screen disables Launch when it handles the change
        await wait_for(pilot, lambda: screen.query_one("#row-dfkd-iterations").has_class("-invalid") and screen.query_one("#launch").disabled)
        assert "greater than or equal to 1" in rendered(screen.query_one("#row-dfkd-iterations .field-error"))
        await pilot.press("ctrl+l")
        assert fake_launcher.started == []
        iters.value = "7"
        await wait_for(pilot, lambda: not screen.query_one("#launch").disabled)
        screen.query_one("#f-atesc-enabled", Switch).value = False
        await wait_for(pilot, lambda: "atesc.enabled" in rendered(screen.query_one("#diff")))
        diff = rendered(screen.query_one("#diff"))
        assert "dfkd.iterations: 50 -> 7" in diff and "atesc.enabled: True -> False" in diff
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "dfkd.iterations" in rendered(app.screen.query_one("#confirm-body"))
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        assert len(fake_launcher.started) == 1
        written, run_dir = fake_launcher.started[0]
        assert run_dir.parent == runs_root and run_dir.name.startswith("tiny-")
        assert app.screen.run_dir == run_dir
        from core.config import load_config

        cfg = load_config(written, environ={})
        assert cfg.dfkd.iterations == 7 and cfg.atesc.enabled is False
        # quitting with a launched run alive asks first, and leaves it running
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "keep running" in rendered(app.screen.query_one("#confirm-body"))
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen) and app.is_running
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
    assert fake_launcher.alive(), "the launched run must survive quitting the app"


async def test_typing_q_in_a_field_does_not_quit(runs_root, tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('[run]\nname = "p"\n')
    app = AtescApp(runs_root, presets=[preset])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        field = app.screen.query_one("#f-data-id_domain", Input)
        field.focus()
        field.value = ""
        await pilot.press("q", "n", "question_mark")
        assert app.is_running and field.value == "qn?"
        assert isinstance(app.screen, NewRunScreen)


async def test_keys_help_stop_resume_and_quit(populated, fake_launcher):
    root, runs = populated
    app = AtescApp(root, launcher=fake_launcher, presets=[])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 4)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        table = app.screen.query_one(RunTable)
        names = [row.key.value.rsplit("/", 1)[-1] for row in table.ordered_rows]
        table.move_cursor(row=names.index("crash-0004"))
        await pilot.press("s")
        assert fake_launcher.stopped == [runs["crash"]]
        await pilot.press("r")  # crashed run without a checkpoint: refused
        assert fake_launcher.resumed == []
        table.move_cursor(row=names.index("sl-dfq-0001"))
        await pilot.press("r")  # finished run: refused
        assert fake_launcher.resumed == []
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        await pilot.press("escape")
        await pilot.press("q")  # nothing launched: quits at once
    assert not app.is_running


async def test_command_palette_has_the_actions(populated):
    root, _ = populated
    app = AtescApp(root, presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 4)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for t in ("New run", "Open run", "Compare runs", "Stop run", "Resume run", "Help", "Quit"):
            assert t in titles
        await pilot.press("ctrl+p")
        await pilot.press(*"new run")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
async def test_monitor_fits_small_and_large_terminals(populated, size):
    root, runs = populated
    app = AtescApp(root, open_run=runs["atesc"], presets=[])
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen) and "step 80/100" in rendered(app.screen.query_one(RunHeader)))
        for chart in app.screen.query(MetricChart):
            assert chart.size.width >= 20 and chart.size.height >= 5
        app.theme = "textual-light"
        await pilot.pause(0.1)
        assert app.screen.query_one(RunHeader).size.height >= 3
