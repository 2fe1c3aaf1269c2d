"""The Textual app: wires the screens, the launcher and the command palette."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from core.config import Config
from core.rundir import CHECKPOINT_DIR, new_run_dir, read_lock
from core.rundir.summary import summarize_run
from atesc_tui.launcher import Launcher
from atesc_tui.screens.compare import CompareScreen
from atesc_tui.screens.confirm import ConfirmScreen
from atesc_tui.screens.help import HelpScreen
from atesc_tui.screens.monitor import MonitorScreen
from atesc_tui.screens.new_run import NewRunScreen, diff_text
from atesc_tui.screens.runs import RunsScreen

LAUNCH_DIR = ".atesc-tui"  # under the runs root: the edited presets the app launched


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

    def on_mount(self) -> None:
        self.push_screen(RunsScreen(self.runs_root))
        if self.open_run is not None:
            self.open_monitor(self.open_run)

    # ---- navigation -------------------------------------------------------------------------

    def open_monitor(self, run_dir: Path) -> None:
        if isinstance(self.screen, MonitorScreen) and self.screen.run_dir == Path(run_dir):
            return
        self.push_screen(MonitorScreen(Path(run_dir)))

    def open_compare(self, run_dirs: list[Path]) -> None:
        self.push_screen(CompareScreen(run_dirs))

    def action_new_run(self) -> None:
        if not isinstance(self.screen, NewRunScreen):
            self.push_screen(NewRunScreen(self.presets))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_compare(self) -> None:
        screen = self._runs_screen()
        if screen is not None:
            screen.action_compare()

    def _runs_screen(self) -> RunsScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, RunsScreen)), None)

    def _target_run(self) -> Path | None:
        screen = self.screen
        if isinstance(screen, MonitorScreen):
            return screen.run_dir
        if isinstance(screen, RunsScreen):
            return screen._current()
        return None

    # ---- run control ------------------------------------------------------------------------

    def confirm_launch(self, preset: Path | None, base: Config, config: Config, diff) -> None:
        name = preset.stem if preset else "defaults"
        body = f"Launch a run from [b]{name}[/] with these changes?\n\n{diff_text(diff)}"

        def done(ok: bool | None) -> None:
            if ok:
                self.launch(config)

        self.push_screen(ConfirmScreen(body, yes="Launch", no="Cancel"), done)

    def launch(self, config: Config) -> Path:
        """Write the edited config as a preset, start the trainer on it, open its monitor."""
        run_dir = new_run_dir(self.runs_root, config.run.name)
        launch_dir = self.runs_root / LAUNCH_DIR
        launch_dir.mkdir(parents=True, exist_ok=True)
        preset = launch_dir / f"{run_dir.name}.toml"
        preset.write_text(config.to_toml())
        self.launcher.start(preset, run_dir)
        self.notify(f"launched {run_dir.name}")
        if isinstance(self.screen, NewRunScreen):
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
        alive = self.launcher.alive()
        if not alive:
            self.exit()
            return
        names = "\n".join(f"  {p.name}" for p in alive)
        msg = (
            f"{len(alive)} run(s) started here are still running:\n{names}\n\n"
            "They keep running after you quit (reattach with atesc-tui). Quit?"
        )

        def done(ok: bool | None) -> None:
            if ok:
                self.exit()

        self.push_screen(ConfirmScreen(msg, yes="Quit", no="Stay"), done)

    # ---- command palette --------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New run", "Pick a preset, edit it and launch a run (n)", self.action_new_run)
        yield SystemCommand("Help", "Keys and what they do (?)", self.action_help)
        if isinstance(screen, RunsScreen):
            yield SystemCommand("Open run", "Monitor the run under the cursor (enter)", screen.action_open)
            yield SystemCommand("Compare runs", "Overlay the marked runs (c)", screen.action_compare)
        if isinstance(screen, (RunsScreen, MonitorScreen)):
            yield SystemCommand("Stop run", "SIGINT: the trainer checkpoints and exits (s)", self.action_stop)
            yield SystemCommand("Resume run", "Continue from the latest checkpoint (r)", self.action_resume)
        if isinstance(screen, NewRunScreen):
            yield SystemCommand("Launch run", "Launch with the edited config (ctrl+l)", screen.action_launch)
