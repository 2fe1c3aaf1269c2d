"""Shown when the trainer crashed: its message and the tail of its traceback."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

TAIL_LINES = 8


def traceback_tail(tb: str, lines: int = TAIL_LINES) -> str:
    parts = tb.rstrip().splitlines()
    if len(parts) <= lines:
        return "\n".join(parts)
    return "\n".join(["...", *parts[-lines:]])


class ErrorPanel(Static):
    DEFAULT_CSS = """
    ErrorPanel {
        display: none;
        height: auto;
        max-height: 12;
        border: heavy $error;
        border-title-color: $error;
        padding: 0 1;
        overflow-y: auto;
    }
    ErrorPanel.-shown { display: block; }
    """

    def show_error(self, message: str, traceback: str = "", log_tail: str = "") -> None:
        self.border_title = "trainer crashed"
        body = Text(message, style="bold")
        tail = traceback_tail(traceback) if traceback else log_tail
        if tail:
            body.append("\n" + tail, style="")
        self.update(body)
        self.add_class("-shown")

    def clear(self) -> None:
        self.remove_class("-shown")
        self.update("")
