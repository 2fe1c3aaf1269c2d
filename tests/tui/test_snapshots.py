"""SVG snapshots of the main screens on deterministic fake runs: runs, monitor, compare and help at
80x24, 100x30 and 200x60; the crashed run and the new-run form at 100x30.

Regenerate with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

import pytest
from tui_helpers import rendered, snapshot_root, wait_for

from atesc_tui.app import AtescApp
from atesc_tui.screens.compare import CompareScreen
from atesc_tui.screens.help import HelpScreen
from atesc_tui.screens.monitor import MonitorScreen
from atesc_tui.screens.new_run import NewRunScreen
from atesc_tui.widgets.config_form import ConfigForm
from atesc_tui.widgets.metric_chart import MetricChart
from atesc_tui.widgets.run_table import RunTable

SIZE = (100, 30)
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((100, 30), id="100x30"), pytest.param((200, 60), id="200x60")]


def _rows(app) -> int:
    return app.screen.query_one(RunTable).row_count


def _monitor_ready(app, step: str):
    def ready() -> bool:
        screen = app.screen
        if not isinstance(screen, MonitorScreen):
            return False
        screen.refresh_view(force_charts=True)
        if not (screen.reader.version > 0 and screen.reader.tail.offset == (screen.run_dir / "events.jsonl").stat().st_size
                and step in str(screen.reader.history.step)):
            return False
        screen.refresh_view(force_charts=True)
        return screen.query_one("#chart-acc", MetricChart).last_points > 0  # drawn, not just handed over

    return ready


@pytest.mark.parametrize("size", SIZES)
def test_runs_screen(snap_compare, size):
    root = snapshot_root()
    app = AtescApp(root, presets=[])

    async def before(pilot):
        await wait_for(pilot, lambda: _rows(app) == 4)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_monitor_screen(snap_compare, size):
    root = snapshot_root()
    app = AtescApp(root, open_run=root / "ntl-atesc-0003", presets=[])

    async def before(pilot):
        await wait_for(pilot, _monitor_ready(app, "80"))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare, size):
    root = snapshot_root()
    app = AtescApp(root, presets=[])

    async def before(pilot):
        await wait_for(pilot, lambda: _rows(app) == 4)
        await pilot.press("question_mark")
        # Markdown renders its blocks asynchronously: wait until the last section and its last line exist
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and len(app.screen.query("MarkdownH2")) == 3
                       and "quitting leaves them running" in str(app.screen.query("MarkdownParagraph").last()._content))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=before)


def test_monitor_crashed_run(snap_compare):
    root = snapshot_root()
    app = AtescApp(root, open_run=root / "crash-0004", presets=[])

    async def before(pilot):
        await wait_for(pilot, _monitor_ready(app, "12"))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


@pytest.mark.parametrize("size", SIZES)
def test_compare_screen(snap_compare, size):
    root = snapshot_root()
    app = AtescApp(root, presets=[])

    async def before(pilot):
        await wait_for(pilot, lambda: _rows(app) == 4)
        app.open_compare([root / "sl-dfq-0001", root / "ntl-dfq-0002", root / "ntl-atesc-0003"])
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.query_one("#cmp-acc-id", MetricChart).last_points > 0)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=before)


def test_new_run_screen_with_error(snap_compare):
    root = snapshot_root()
    preset = root.parent / "quick.toml"
    preset.write_text('[dfkd]\niterations = 50\n[run]\nname = "quick"\n')
    app = AtescApp(root, presets=[preset])

    async def before(pilot):
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen.query_one(ConfigForm)
        await form.reveal("dfkd")
        app.screen.query_one("#f-data-eval_samples").value = "5"
        app.screen.query_one("#f-dfkd-iterations").value = "20"

        def shown() -> bool:
            diff = rendered(app.screen.query_one("#diff"))
            return "dfkd.iterations: 50 -> 20" in diff and "'5' is invalid" in diff

        await wait_for(pilot, shown)
        form.scroll_home(animate=False)  # expanding a section may have scrolled it into view
        await wait_for(pilot, lambda: form.scroll_y == 0)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)
