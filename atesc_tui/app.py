"""The Textual app: wires the screens, the launcher and the command palette."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen

from core.rundir import CHECKPOINT_DIR, new_run_dir, read_lock
from core.rundir.summary import summarize_run
from atesc_tui.launcher import Launcher
from atesc_tui.screens.confirm import ConfirmScreen
from atesc_tui.screens.runs import RunsScreen

if TYPE_CHECKING:
    from core.config import Config

LAUNCH_DIR = ".atesc-tui"  # under the runs root: the edited presets the app launched
SMOOTHING = (0.0, 0.6, 0.9)  # EMA weights the `e` key cycles through
# Screens beyond the runs table (and numpy, pydantic forms, markdown) are imported when first
# opened, or in the background once the first screen is up: start-up stays under a second. So
# the app tells screens apart by class name rather than importing their classes.
LAZY_SCREENS = ("atesc_tui.screens.monitor", "atesc_tui.screens.compare", "atesc_tui.screens.new_run",
                "atesc_tui.screens.help", "atesc_tui.widgets.config_form")


def _is(screen: Screen, *names: str) -> bool:
    return type(screen).__name__ in names


class AtescApp(App):
    CSS_PATH = "styles.tcss"
    TITLE = "atesc-tui"

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("n", "new_run", "New run", show=False),
    ]

    def __init__(
        self,
        runs_root: Path = Path("runs"),
        *,
        open_run: Path | None = None,
        launcher: Launcher | None = None,
        presets: list[Path] | None = None,
    ) -> None:
        super().__init__()
        self.runs_root = Path(runs_root)
        self.open_run = open_run
        self.launcher = launcher or Launcher()
        self.presets = presets
        self.smoothing = 0.0  # EMA weight of every chart (monitor and compare); `e` cycles it
        self.log_scale = False  # log y axis for loss and learning-rate charts; `l` toggles it

    @property
    def _background_screens(self) -> list[Screen]:
        # Textual (8.2) counts the screen under an opaque full screen as visible, and the two then
        # trigger each other's repaint twice a second forever: an idle monitor cost ~2 % CPU. Only
        # modal screens (help, dialogs) show what is under them here.
        if self._screen_stack and not isinstance(self._screen_stack[-1], ModalScreen):
            return []
        return super()._background_screens

    def on_mount(self) -> None:
        self.push_screen(RunsScreen(self.runs_root))
        if self.open_run is not None:
            self.open_monitor(self.open_run)
        self.call_after_refresh(self.run_worker, self._preload, thread=True, group="preload")

    @staticmethod
    def _preload() -> None:
        for module in LAZY_SCREENS:
            importlib.import_module(module)

    # ---- navigation -------------------------------------------------------------------------

    def open_monitor(self, run_dir: Path) -> None:
        if _is(self.screen, "MonitorScreen") and self.screen.run_dir == Path(run_dir):
            return
        from atesc_tui.screens.monitor import MonitorScreen

        self.push_screen(MonitorScreen(Path(run_dir)))

    def open_compare(self, run_dirs: list[Path]) -> None:
        from atesc_tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(run_dirs))

    def action_new_run(self) -> None:
        if not _is(self.screen, "NewRunScreen"):
            from atesc_tui.screens.new_run import NewRunScreen

            self.push_screen(NewRunScreen(self.presets))

    def action_help(self) -> None:
        if not _is(self.screen, "HelpScreen"):
            from atesc_tui.screens.help import HelpScreen

            self.push_screen(HelpScreen())

    def action_compare(self) -> None:
        screen = self._runs_screen()
        if screen is not None:
            screen.action_compare()

    def action_smoothing(self) -> None:
        i = SMOOTHING.index(self.smoothing) if self.smoothing in SMOOTHING else 0
        self.smoothing = SMOOTHING[(i + 1) % len(SMOOTHING)]
        self._apply_chart_view()
        self.notify(f"smoothing: EMA {self.smoothing:g}" if self.smoothing else "smoothing off", timeout=2)

    def action_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._apply_chart_view()
        self.notify(f"log scale for losses {'on' if self.log_scale else 'off'}", timeout=2)

    def _apply_chart_view(self) -> None:
        for screen in self.screen_stack:
            if _is(screen, "MonitorScreen", "CompareScreen"):
                screen.apply_view()

    def _runs_screen(self) -> RunsScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, RunsScreen)), None)

    def _target_run(self) -> Path | None:
        screen = self.screen
        if _is(screen, "MonitorScreen"):
            return screen.run_dir
        if isinstance(screen, RunsScreen):
            return screen._current()
        return None

    # ---- run control ------------------------------------------------------------------------

    def confirm_launch(self, preset: Path | None, base: Config, config: Config, diff) -> None:
        from atesc_tui.screens.new_run import diff_text

        name = preset.stem if preset else "defaults"
        body = f"Launch a run from [b]{name}[/] with these changes?\n\n{diff_text(diff)}"

        def done(ok: bool | None) -> None:
            if ok:
                self.launch(config)

        self.push_screen(ConfirmScreen(body, (("y", "Launch", True), ("n", "Cancel", False))), done)

    def launch(self, config: Config) -> Path:
        """Write the edited config as a preset, start the trainer on it, open its monitor."""
        run_dir = new_run_dir(self.runs_root, config.run.name)
        launch_dir = self.runs_root / LAUNCH_DIR
        launch_dir.mkdir(parents=True, exist_ok=True)
        preset = launch_dir / f"{run_dir.name}.toml"
        preset.write_text(config.to_toml())
        self.launcher.start(preset, run_dir)
        self.notify(f"launched {run_dir.name}")
        if _is(self.screen, "NewRunScreen"):
            self.pop_screen()
        self.open_monitor(run_dir)
        return run_dir

    def action_stop(self) -> None:
        path = self._target_run()
        if path is not None:
            self.stop_run(path)

    def action_resume(self) -> None:
        path = self._target_run()
        if path is not None:
            self.resume_run(path)

    def stop_run(self, run_dir: Path) -> None:
        pid = self.launcher.stop(run_dir)
        if pid is None:
            self.notify(f"{run_dir.name} is not running", severity="warning")
        else:
            self.notify(f"stopping {run_dir.name} (SIGINT to pid {pid}); it checkpoints first")

    def resume_run(self, run_dir: Path) -> None:
        lock = read_lock(run_dir)
        if lock is not None and lock.alive:
            self.notify(f"{run_dir.name} is already running (pid {lock.pid})", severity="warning")
            return
        summary = summarize_run(run_dir)
        if summary.status == "done":
            self.notify(f"{run_dir.name} has finished", severity="warning")
            return
        ckpts = list((run_dir / CHECKPOINT_DIR).glob("*.safetensors")) if (run_dir / CHECKPOINT_DIR).is_dir() else []
        if not ckpts:
            self.notify(f"{run_dir.name} has no checkpoint to resume from", severity="error")
            return
        self.launcher.resume(run_dir)
        self.notify(f"resuming {run_dir.name}")

    # ---- quitting ---------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """Quit at once, or, while runs launched here are alive, ask: leave them running, stop
        them (each checkpoints first), or stay."""
        alive = self.launcher.alive()
        if not alive:
            self.exit()
            return
        names = "\n".join(f"  {p.name}" for p in alive)
        msg = (
            f"{len(alive)} run(s) started here are still running:\n{names}\n\n"
            "Quit and leave them running (they keep running; reattach with atesc-tui), "
            "or stop them first (each saves a checkpoint; resume later with r)?"
        )

        def done(choice: str | None) -> None:
            if choice == "stop":
                for run_dir in alive:
                    self.launcher.stop(run_dir)
            if choice in ("leave", "stop"):
                self.exit()

        choices = (("y", "Quit, leave running", "leave"), ("s", "Stop them and quit", "stop"), ("n", "Stay", None))
        self.push_screen(ConfirmScreen(msg, choices), done)

    # ---- command palette --------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key's action, for the screen it works on (and themes, screenshots, keys)."""
        for cmd in super().get_system_commands(screen):
            if cmd.title == "Quit":
                yield SystemCommand("Quit", "Quit (asks first while runs started here are alive) (q)", self.action_quit)
            else:
                yield cmd
        yield SystemCommand("New run", "Pick a preset, edit it and launch a run (n)", self.action_new_run)
        yield SystemCommand("Help", "Keys, charts and a glossary (?)", self.action_help)
        if isinstance(screen, RunsScreen):
            yield SystemCommand("Open run", "Monitor the run under the cursor (enter)", screen.action_open)
            yield SystemCommand("Mark for compare", "Mark or unmark the run under the cursor (space)", screen.action_mark)
            yield SystemCommand("Compare runs", "Overlay the marked runs (c)", screen.action_compare)
        if isinstance(screen, RunsScreen) or _is(screen, "MonitorScreen"):
            yield SystemCommand("Stop run", "SIGINT: the trainer checkpoints and exits (s)", self.action_stop)
            yield SystemCommand("Resume run", "Continue from the latest checkpoint (r)", self.action_resume)
        if _is(screen, "MonitorScreen"):
            yield SystemCommand("Show charts", "Monitor: the charts tab (1)", lambda: screen.action_tab("tab-charts"))
            yield SystemCommand("Show samples and log", "Monitor: sample grids and event log (2)", lambda: screen.action_tab("tab-samples"))
        if _is(screen, "MonitorScreen", "CompareScreen"):
            yield SystemCommand("Smoothing", "Cycle EMA smoothing of the charts: off, 0.6, 0.9 (e)", self.action_smoothing)
            yield SystemCommand("Log scale", "Toggle a log y axis for losses and learning rate (l)", self.action_log_scale)
        if _is(screen, "NewRunScreen"):
            yield SystemCommand("Launch run", "Launch with the edited config (ctrl+l)", screen.action_launch)
        if len(self.screen_stack) > 2:
            yield SystemCommand("Back", "Close this screen (escape)", self.pop_screen)
