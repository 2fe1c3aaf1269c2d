"""Pick a preset, edit it in the generated form, see the diff, launch."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Label, Select, Static

from core.config import Config
from core.errors import BadInput
from core.presets import builtin_presets
from atesc_tui.widgets.config_form import ConfigForm, config_diff, load_preset

DEFAULTS = "(defaults)"


def diff_text(diff: list[tuple[str, object, object]], invalid: dict[str, tuple[object, str]] | None = None) -> str:
    """The changes against the preset; ``invalid`` fields (key -> (typed value, error)) are shown
    as not applied instead of their last valid value."""
    invalid = invalid or {}
    lines = [
        f"[b]{escape(k)}[/]: [red]{escape(repr(a))}[/] -> [green]{escape(repr(b))}[/]" for k, a, b in diff if k not in invalid
    ]
    lines += [
        f"[b]{escape(k)}[/]: [reverse red]{escape(repr(raw))} is invalid[/], not applied ({escape(msg)})"
        for k, (raw, msg) in sorted(invalid.items())
    ]
    return "\n".join(lines) if lines else "[dim]no changes against the preset[/]"


class NewRunScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("ctrl+l", "launch", "Launch", priority=True),
    ]

    def __init__(self, presets: list[Path] | None = None) -> None:
        super().__init__()
        self.presets = builtin_presets() if presets is None else presets
        self.preset_path: Path | None = self.presets[0] if self.presets else None
        self.base = self._load(self.preset_path)

    def _load(self, path: Path | None) -> Config:
        if path is None:
            return Config.model_validate({})
        try:
            return load_preset(path)
        except BadInput as exc:
            self.notify(f"{path.name}: {exc}", severity="error")
            return Config.model_validate({})

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with Horizontal(id="preset-bar"):
            yield Label("Preset", id="preset-label")
            options = [(p.stem, str(p)) for p in self.presets] or [(DEFAULTS, DEFAULTS)]
            yield Select(options, value=options[0][1], allow_blank=False, id="preset-select")
            yield Button("Launch", id="launch", variant="success")
        with Horizontal(id="new-run-body"):
            yield ConfigForm(self.base, id="config-form")
            with Vertical(id="diff-pane"):
                yield Static("[b]Changes[/]", id="diff-title")
                yield Static(diff_text([]), id="diff")
        yield Static("", id="field-help")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "new run"

    @on(Select.Changed, "#preset-select")
    def _preset_changed(self, event: Select.Changed) -> None:
        value = event.value
        path = None if value in (DEFAULTS, Select.BLANK) else Path(str(value))
        if path == self.preset_path and self.query_one(ConfigForm).config == self.base:
            return
        self.preset_path = path
        self.base = self._load(path)
        self.query_one(ConfigForm).load(self.base)

    @on(ConfigForm.Changed)
    def _form_changed(self, event: ConfigForm.Changed) -> None:
        form = event.form
        invalid = {key: (form.raw_value(key), msg) for key, msg in form.errors.items()}
        self.query_one("#diff", Static).update(diff_text(config_diff(self.base, form.config), invalid))
        self.query_one("#launch", Button).disabled = bool(form.errors)

    @on(ConfigForm.FieldFocused)
    def _field_focused(self, event: ConfigForm.FieldFocused) -> None:
        self.query_one("#field-help", Static).update(escape(event.help_text))

    @on(Button.Pressed, "#launch")
    def _launch_pressed(self) -> None:
        self.action_launch()

    def action_launch(self) -> None:
        form = self.query_one(ConfigForm)
        if form.errors:
            key, msg = next(iter(form.errors.items()))
            self.notify(f"{key}: {msg}", title="fix the form first", severity="error")
            return
        diff = config_diff(self.base, form.config)
        self.app.confirm_launch(self.preset_path, self.base, form.config, diff)
