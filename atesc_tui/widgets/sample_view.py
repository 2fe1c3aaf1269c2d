"""The latest grid of synthetic samples, drawn with textual-image (half-block fallback)."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

# Imported here, before any App runs: textual-image probes the terminal (cell size, graphics
# protocols) at import time, and a probe sent after Textual owns the terminal would have its
# answer read back as key presses.
from textual_image.widget import HalfcellImage, Image


def _image_class(headless_or_web: bool):
    # Sixel/TGP need a real terminal that answered textual-image's probe; a browser or a
    # headless test gets coloured half blocks, which work everywhere.
    return HalfcellImage if headless_or_web else Image


class SampleView(Vertical):
    DEFAULT_CSS = """
    SampleView { height: 1fr; width: 1fr; }
    SampleView #sample-caption { height: 1; color: $text-muted; }
    SampleView .sample-image { width: auto; height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path: Path | None = None

    def compose(self) -> ComposeResult:
        yield Static("no samples yet", id="sample-caption")

    def show(self, path: Path | None) -> None:
        if path is None or path == self.path or not path.exists():
            return
        self.path = path
        self.query_one("#sample-caption", Static).update(f"samples: {path.name}")
        cls = _image_class(self.app.is_headless or self.app.is_web)
        for old in self.query(".sample-image"):
            old.remove()
        try:
            self.mount(cls(str(path), classes="sample-image"))
        except Exception as exc:  # noqa: BLE001 - a half-written PNG: try again on the next eval
            self.path = None
            self.query_one("#sample-caption", Static).update(f"samples: cannot read {path.name}: {exc}")
