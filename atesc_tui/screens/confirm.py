"""A modal question with a few answers, each on a button that names its key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

YES_NO = (("y", "Yes", True), ("n", "No", False))


class ConfirmScreen(ModalScreen[Any]):
    """``choices``: ``(key, label, value)``; the first is the default action's style, the last
    is also chosen by escape. Dismisses with the chosen value."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 74; max-width: 100%; height: auto; max-height: 100%;
        border: thick $warning; background: $surface; padding: 0 1;
    }
    ConfirmScreen #confirm-body { height: auto; max-height: 16; overflow-y: auto; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ConfirmScreen Button { margin-left: 1; min-width: 8; }
    """

    def __init__(self, message: str, choices: Sequence[tuple[str, str, Any]] = YES_NO) -> None:
        super().__init__()
        self.message = message
        self.choices = list(choices)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.message, id="confirm-body")
            with Horizontal():
                last = len(self.choices) - 1
                for i, (key, label, _) in enumerate(self.choices):
                    keys = f"{key}/esc" if i == last else key
                    yield Button(f"{label} ({keys})", id=f"choice-{i}", variant="warning" if i == 0 else "default")

    def on_mount(self) -> None:
        self.query_one(f"#choice-{len(self.choices) - 1}", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.choices[int(str(event.button.id).split("-")[1])][2])

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape":
            event.stop()
            self.dismiss(self.choices[-1][2])
            return
        for key, _, value in self.choices:
            if event.character == key:
                event.stop()
                self.dismiss(value)
                return
