"""Issue 15: charts with axes and meaning, compare by what differs, every size from 80x24 up.

Every Pilot test waits for the state it asserts (``wait_for``), never for a fixed time.
"""

from __future__ import annotations

import os

import numpy as np
from fake_run import FakeRun, make_run
from textual.widgets import Button, DataTable
from tui_helpers import rendered, wait_for

from atesc_tui.app import AtescApp
from atesc_tui.screens.compare import CompareScreen, differing_fields, run_labels
from atesc_tui.screens.confirm import ConfirmScreen
from atesc_tui.screens.help import HelpScreen
from atesc_tui.screens.monitor import CHARTS, MonitorScreen, chart_series
from atesc_tui.screens.new_run import NewRunScreen
from atesc_tui.widgets.config_form import ConfigForm
from atesc_tui.widgets.braille_plot import OVERLAP_STYLE, Line, Plot, ema, fmt_tick, nice_ticks, render_plot
from atesc_tui.widgets.metric_chart import MetricChart
from atesc_tui.widgets.run_header import RunHeader, eta_s
from atesc_tui.widgets.run_table import RunTable
from atesc_tui.widgets.sample_view import SamplePanel, fit_cells
from core.rundir.history import RunHistory


def _monitor(app) -> MonitorScreen:
    assert isinstance(app.screen, MonitorScreen)
    return app.screen


def _charted(app, step: int):
    """The monitor shows ``step`` and its charts have drawn it."""

    def ready() -> bool:
        screen = app.screen
        if not isinstance(screen, MonitorScreen) or f"step {step}/" not in rendered(screen.query_one(RunHeader)):
            return False
        screen.refresh_view(force_charts=True)
        return screen.query_one("#chart-gen", MetricChart).last_points >= step

    return ready


# ---- pure drawing ----------------------------------------------------------------------------


def test_ema_matches_tensorboard_and_skips_gaps():
    rng = np.random.default_rng(0)
    y = rng.random(300)
    y[[5, 77, 200]] = np.nan
    w, s, ref = 0.6, 0.0, []
    for k, v in enumerate(y[np.isfinite(y)]):
        s = w * s + (1 - w) * v
        ref.append(s / (1 - w ** (k + 1)))
    out = ema(y, w)
    assert np.isnan(out[[5, 77, 200]]).all()
    np.testing.assert_allclose(out[np.isfinite(y)], ref, rtol=1e-12)


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.2, 3.5, 3).tolist() == [1.0, 2.0, 3.0]
    assert nice_ticks(0, 450, 4, integer=True).tolist() == [0, 100, 200, 300, 400]
    assert nice_ticks(0, 1, 3, integer=True).tolist() == [0, 1]  # steps are whole numbers
    assert [fmt_tick(v, 0.025) for v in (0.025, 0.05, 0.075)] == ["0.025", "0.050", "0.075"]
    assert [fmt_tick(v, 2.5) for v in (0, 2.5, 5)] == ["0.0", "2.5", "5.0"] and fmt_tick(20_000, 5000) == "20k"


def test_a_nan_is_a_gap_not_a_zero():
    x = np.arange(100, dtype=float)
    y = np.ones(100)
    y[40:60] = np.nan
    rows, xmap = render_plot(Plot("t", [Line("a", x, y, "cyan")], x_range=(0, 99), y_range=(0, 2)), 40, 8)
    plot_rows = [r.plain[xmap["col0"] :] for r in rows[1:-2]]
    drawn_rows = [r for r in plot_rows if r.strip()]
    assert len(drawn_rows) == 1  # one flat line at 1.0, nothing at 0
    drawn = [i for i, c in enumerate(drawn_rows[0]) if c != " "]
    gap = [i for i in range(xmap["cols"]) if i not in drawn]
    # the hole is where steps 40..59 are (columns ~ 40 % .. 60 % of the width)
    assert gap and min(gap) >= 0.38 * xmap["cols"] and max(gap) <= 0.62 * xmap["cols"]


def test_coinciding_series_stay_visible():
    x = np.arange(50, dtype=float)
    y = np.full(50, 0.5)
    rows, _ = render_plot(Plot("t", [Line("ID", x, y, "cyan"), Line("OOD", x, y, "dark_orange")], y_range=(0, 1)), 40, 8)
    styles = {str(span.style) for r in rows for span in r.spans}
    assert OVERLAP_STYLE in styles  # shared cells in the text colour: both lines are there


def test_forgetting_loss_has_gaps_where_no_robust_sample_and_ata_off_is_na():
    spec = next(s for s in CHARTS if s.id == "chart-kd")
    x = np.arange(1, 5, dtype=float)
    data = {
        "loss_kd": (x, np.array([1.0, 0.9, 0.8, 0.7])),
        "loss_forget": (x, np.array([0.3, 0.0, 0.2, 0.0])),
        "split_ood_ratio": (x, np.array([0.5, 0.0, 0.25, 0.0])),
    }
    (_, _, kd), (_, _, forget) = chart_series(spec, data, atesc=True)
    assert kd.tolist() == [1.0, 0.9, 0.8, 0.7]
    assert forget[0] == 0.3 and np.isnan(forget[1]) and forget[2] == 0.2 and np.isnan(forget[3])
    (_, _, _), (_, _, off) = chart_series(spec, data, atesc=False)
    assert np.isnan(off).all()


def test_sample_grids_keep_their_aspect_ratio():
    # a 274x138 grid in a 40x23-cell panel of 10x20-pixel cells: 40 columns, 10 rows (not 23)
    assert fit_cells((274, 138), (40, 23), (10, 20)) == (40, 10)
    assert fit_cells((274, 138), (200, 20), (10, 20)) == (79, 20)  # height-bound
    cols, rows = fit_cells((64, 64), (100, 50), (10, 20))
    assert abs(cols * 10 - rows * 20) <= 20


# ---- compare labels ----------------------------------------------------------------------------


def test_compare_labels_are_the_fields_that_differ(runs_root):
    on = make_run(runs_root, "quickstart-20261127-100000", 20, atesc=True, seed=1).run_dir
    off = make_run(runs_root, "quickstart-20261127-100500", 20, atesc=False, seed=1).run_dir
    from atesc_tui.screens.compare import read_config

    configs = [read_config(on), read_config(off)]
    fields = differing_fields(configs)
    assert fields == ["atesc.enabled"]  # run.name differs too, but means nothing
    assert run_labels([on, off], configs, fields) == ["ATEsc on", "ATEsc off"]
    configs[1]["run.seed"] = 2
    fields = differing_fields(configs)
    assert run_labels([on, off], configs, fields) == ["ATEsc on, seed 1", "ATEsc off, seed 2"]


def test_best_id_ignores_the_untrained_step_0_evaluation(runs_root):
    from core.rundir.events import EvalEvent

    run = FakeRun(runs_root / "trap", iterations=20)
    run.emit(EvalEvent(t=run.t, step=0, student_acc_id=0.95, student_acc_ood=0.1))  # above anything after
    run.advance(20, samples=False)  # evaluations at steps 1, 10, 20
    run.close()
    hist, _ = RunHistory.load(run.run_dir)
    assert 0.0 in list(hist.series["student_acc_id"].x)
    best = max(run.acc(s)[0] for s in (1, 10, 20))
    assert hist.series["student_acc_id"].best == best < 0.95
    from core.rundir.summary import summarize_run

    assert summarize_run(run.run_dir).best_acc_id == best  # the runs table and compare show this


# ---- Pilot: behaviour ----------------------------------------------------------------------------


async def test_cursor_stays_on_its_run_when_a_new_run_appears(populated):
    root, runs = populated
    app = AtescApp(root, presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.screen.query_one(RunTable)
        await wait_for(pilot, lambda: table.row_count == 4)
        keys = [row.key.value for row in table.ordered_rows]
        table.move_cursor(row=keys.index(str(runs["ntl"])))
        assert table.current_key == str(runs["ntl"])
        row_before = table.cursor_row
        make_run(root, "newest-0005", 90)  # newest: sorts to the top
        await wait_for(pilot, lambda: table.row_count == 5)
        assert table.current_key == str(runs["ntl"]) and table.cursor_row == row_before + 1
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        assert app.screen.run_dir == runs["ntl"]


async def test_palette_has_every_action_and_quit_says_it_asks(populated):
    root, runs = populated
    app = AtescApp(root, presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(RunTable).row_count == 4)
        cmds = {c.title: c.help for c in app.get_system_commands(app.screen)}
        for t in ("New run", "Open run", "Mark for compare", "Compare runs", "Stop run", "Resume run", "Help", "Quit"):
            assert t in cmds
        assert "as soon as possible" not in cmds["Quit"] and "asks first" in cmds["Quit"]
        # every key in the runs screen's footer has its palette command
        keys = {b.description for b in app.screen.BINDINGS if b.show}
        assert keys == {"Open", "Mark", "Compare", "Stop", "Resume", "New run"}
        app.open_monitor(runs["atesc"])
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Stop run", "Resume run", "Smoothing", "Log scale", "Show charts", "Show samples and log", "Back"} <= titles
        mark = next(c for c in app.get_system_commands(app.screen.app.screen_stack[1]) if c.title == "Mark for compare")
        assert mark.callback is not None


async def test_help_scrolls_and_has_a_glossary(populated):
    root, _ = populated
    app = AtescApp(root, presets=[])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        scroll = app.screen.query_one("#help-scroll")
        await wait_for(pilot, lambda: scroll.max_scroll_y > 10)
        assert scroll.scroll_y == 0
        await pilot.press("pagedown", "pagedown")
        await wait_for(pilot, lambda: scroll.scroll_y > 0)
        await pilot.press("end")
        await wait_for(pilot, lambda: scroll.scroll_y == scroll.max_scroll_y)
        from atesc_tui.screens.help import HELP

        assert "## Glossary" in HELP and "**Fragile (ID-like)**" in HELP and "**Split / fragile share**" in HELP


async def test_run_without_atesc_shows_na_split(populated):
    root, runs = populated
    app = AtescApp(root, open_run=runs["sl"], presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, _charted(app, 60))
        screen = _monitor(app)
        text = rendered(screen.query_one(RunHeader))
        assert "fragile n/a (ATEsc off)" in text and "ATEsc off" in text
        split = screen.query_one("#chart-split", MetricChart)
        await wait_for(pilot, lambda: split.last_points == 0 and "fragile" in split.drawn)
        assert np.isnan(split.drawn["fragile"]).all() and split.note.startswith("n/a")
        assert "n/a: this run has ATEsc off" in "\n".join(str(r) for r in split.render().renderables)
        await pilot.press("escape")
        table = app.screen.query_one(RunTable)
        row = table.get_row(str(runs["sl"]))
        assert str(row[-1]) == "n/a"


async def test_smoothing_and_log_toggles_change_the_drawn_series(populated):
    root, runs = populated
    app = AtescApp(root, open_run=runs["atesc"], presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, _charted(app, 80))
        screen = _monitor(app)
        gen = screen.query_one("#chart-gen", MetricChart)
        raw = gen.drawn["generator"].copy()
        await pilot.press("e")
        await wait_for(pilot, lambda: not np.allclose(gen.drawn["generator"], raw))
        np.testing.assert_allclose(gen.drawn["generator"], ema(raw, 0.6))
        assert "EMA 0.6" in gen.render().renderables[0].plain
        acc = screen.query_one("#chart-acc", MetricChart)
        assert acc.smoothing == 0.0  # accuracy is a handful of evaluations: never smoothed
        await pilot.press("e", "e")  # 0.9, then off
        await wait_for(pilot, lambda: np.allclose(gen.drawn["generator"], raw))
        await pilot.press("l")
        await wait_for(pilot, lambda: "log" in gen.render().renderables[0].plain)
        assert gen.log_scale and not acc.log_scale
        ticks = [r.plain.split("┤")[0].strip() for r in gen.render().renderables if "┤" in r.plain]
        assert ticks and all(float(t) > 0 for t in ticks)  # log axis: positive, in the data's units


async def test_mouse_reads_the_values_at_a_step(populated):
    root, runs = populated
    app = AtescApp(root, open_run=runs["atesc"], presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, _charted(app, 80))
        acc = _monitor(app).query_one("#chart-acc", MetricChart)
        await wait_for(pilot, lambda: bool(acc._xmap))
        col = acc._xmap["col0"] + acc._xmap["cols"] // 2  # the middle of the step axis: step ~40
        await pilot.hover("#chart-acc", offset=(col, 4))
        await wait_for(pilot, lambda: acc.hover_x is not None)
        step = acc.hover_x
        assert 35 <= step <= 45
        shown = " ".join(r.plain for r in acc.render().renderables[:2])  # title and legend
        last_eval = max(s for s in (1, 10, 20, 30, 40, 50, 60, 70, 80) if s <= step)
        assert f"@ step {step:.0f}" in shown
        hist = _monitor(app).reader.history
        value = 100 * hist.series["student_acc_id"].y[list(hist.series["student_acc_id"].x).index(last_eval)]
        assert f"ID {value:.1f}" in shown and "ID 62.0" not in shown  # the value there, not the last one


async def test_resume_marker_learning_rate_and_eta_after_resume(runs_root):
    run = FakeRun(runs_root / "resumed", iterations=100, lock_pid=os.getpid())
    run.status("running")
    run.advance(30)
    run.checkpoint()
    run.status("interrupted")
    run.resume()
    run.advance(1)
    app = AtescApp(runs_root, open_run=run.run_dir, presets=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, _charted(app, 31))
        screen = _monitor(app)
        assert "ETA -" not in rendered(screen.query_one(RunHeader))
        with screen.reader.lock:
            expected = eta_s(screen.reader.history)
        assert expected is not None and abs(expected - 69 * run.config.dfkd.batch_size / run.metrics(31)["samples_per_s"]) < 1e-6
        for chart in screen.query(MetricChart):
            assert chart.markers == [30.0]
        lr = screen.query_one("#chart-lr", MetricChart)
        await wait_for(pilot, lambda: len(lr.drawn.get("lr", [])) == 31)
        assert lr.drawn["lr"][0] == run.metrics(1)["lr_student"]
    run.close()


async def test_fragile_and_robust_grids_side_by_side(populated):
    root, runs = populated
    app = AtescApp(root, open_run=runs["atesc"], presets=[])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, _charted(app, 80))
        await pilot.press("2")
        screen = _monitor(app)
        panels = list(screen.query(SamplePanel))
        await wait_for(pilot, lambda: all(len(p.query(".sample-image")) == 1 for p in panels))
        await wait_for(pilot, lambda: all(p.query_one(".sample-image").size.width > 1 for p in panels))
        assert [p.path.name for p in panels] == ["step-000080.png", "step-000080-fragile.png", "step-000080-robust.png"]
        for p in panels:
            img = p.query_one(".sample-image")
            w, h = p.pixels
            # cells of 10 x 20 pixels (headless): rows follow from columns and the image's ratio
            assert abs(img.size.height - img.size.width * 10 * h / w / 20) <= 1, (p.path.name, img.size)


async def test_quit_can_stop_the_launched_runs(runs_root, tmp_path, fake_launcher):
    preset = tmp_path / "tiny.toml"
    preset.write_text('[dfkd]\niterations = 50\n[run]\nname = "tiny"\n')
    app = AtescApp(runs_root, launcher=fake_launcher, presets=[preset])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        await form.query_one(ConfigForm).reveal("dfkd")
        form.query_one("#f-dfkd-iterations").value = "0"
        await wait_for(pilot, lambda: "is invalid, not applied" in rendered(form.query_one("#diff")))
        assert "dfkd.iterations: 50 ->" not in rendered(form.query_one("#diff"))
        form.query_one("#f-dfkd-iterations").value = "7"
        await wait_for(pilot, lambda: "dfkd.iterations: 50 -> 7" in rendered(form.query_one("#diff")))
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        labels = [str(b.label) for b in app.screen.query(Button)]
        assert labels == ["Launch (y)", "Cancel (n/esc)"]
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        run_dir = fake_launcher.started[0][1]
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert [str(b.label) for b in app.screen.query(Button)] == ["Quit, leave running (y)", "Stop them and quit (s)", "Stay (n/esc)"]
        await pilot.press("s")
    assert not app.is_running
    assert fake_launcher.stopped == [run_dir]


async def test_form_sections_are_built_when_expanded(runs_root, tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('[dfkd]\niterations = 50\n[run]\nname = "p"\n')
    app = AtescApp(runs_root, presets=[preset])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen.query_one(ConfigForm)
        assert not form.query("#f-dfkd-iterations")
        form.set_value("dfkd.iterations", 0)  # no widget yet: validated into the config
        await wait_for(pilot, lambda: "dfkd.iterations" in form.errors)
        form.set_value("dfkd.iterations", 9)
        await wait_for(pilot, lambda: form.config.dfkd.iterations == 9 and not form.errors)
        app.screen.query_one("#sec-dfkd").collapsed = False  # what a click on the title does
        await wait_for(pilot, lambda: bool(form.query("#f-dfkd-iterations")))
        assert form.query_one("#f-dfkd-iterations").value == "9"


async def test_compare_fits_80x24(populated):
    root, runs = populated
    app = AtescApp(root, presets=[])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(RunTable).row_count == 4)
        app.open_compare([runs["sl"], runs["ntl"], runs["atesc"]])
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one("#compare-table", DataTable).size.height > 0)
        table = screen.query_one("#compare-table", DataTable)
        assert table.size.height <= table.row_count + 2  # header, rows, maybe a scrollbar: no empty rows
        for chart in screen.query(MetricChart):
            assert chart.size.height >= 7 and chart.size.width >= 38
