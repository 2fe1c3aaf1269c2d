"""The latest synthetic sample grids, drawn with textual-image (half-block fallback): the whole
batch, and side by side the part ATEsc judged fragile (ID-like, KD) and robust (OOD-like,
forgetting). Each grid keeps its aspect ratio at any terminal size."""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

# textual-image probes the terminal when first imported: `atesc-tui` imports it before the app
# starts (atesc_tui.app_main.probe_terminal); this screen's module itself loads lazily.
from textual_image._terminal import get_cell_size
from textual_image.widget import HalfcellImage, Image

GROUPS = (
    ("", "batch", "the whole synthetic batch"),
    ("-fragile", "fragile (ID-like)", "distilled with KD"),
    ("-robust", "robust (OOD-like)", "pushed away (forgetting)"),
)


def _image_class(headless_or_web: bool):
    # Sixel/TGP need a real terminal that answered textual-image's probe; a browser or a
    # headless test gets coloured half blocks, which work everywhere.
    return HalfcellImage if headless_or_web else Image


def fit_cells(pixels: tuple[int, int], room: tuple[int, int], cell: tuple[int, int]) -> tuple[int, int]:
    """Largest (columns, rows) within ``room`` that shows a ``pixels`` image undistorted on
    terminal cells of ``cell`` pixels."""
    (w, h), (cols, rows), (cw, ch) = pixels, room, cell
    if min(w, h, cols, rows, cw, ch) <= 0:
        return 0, 0
    scale = min(cols * cw / w, rows * ch / h)
    return max(1, int(w * scale / cw)), max(1, int(h * scale / ch))


class SamplePanel(Vertical):
    """One grid with its caption; sized to keep the image's aspect ratio."""

    DEFAULT_CSS = """
    SamplePanel { width: 1fr; height: 1fr; margin-right: 2; }
    SamplePanel .sample-caption { height: 2; color: $text-muted; }
    SamplePanel .sample-image { width: 1; height: 1; }
    """

    def __init__(self, title: str, meaning: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.meaning = meaning
        self.path: Path | None = None
        self.pixels: tuple[int, int] = (0, 0)

    def compose(self) -> ComposeResult:
        yield Static(f"[b]{self.title}[/]\n{self.meaning}", classes="sample-caption")

    def show(self, path: Path | None, missing: str) -> None:
        if path == self.path:
            return
        self.path = path
        for old in self.query(".sample-image, .sample-missing"):
            old.remove()
        if path is None or not path.exists():
            self.pixels = (0, 0)
            self.mount(Static(missing, classes="sample-missing"))
            return
        try:
            with PILImage.open(path) as im:
                self.pixels = im.size
            cls = _image_class(self.app.is_headless or self.app.is_web)
            self.mount(cls(str(path), classes="sample-image"))
        except Exception as exc:  # noqa: BLE001 - a half-written PNG: try again on the next eval
            self.path = None
            self.mount(Static(f"cannot read {path.name}: {exc}", classes="sample-missing"))
            return
        self.call_after_refresh(self.fit)

    def on_resize(self) -> None:
        self.fit()

    def fit(self) -> None:
        image = next(iter(self.query(".sample-image")), None)
        if image is None:
            return
        cell = get_cell_size()
        room = (self.size.width, max(1, self.size.height - 2))
        cols, rows = fit_cells(self.pixels, room, (cell.width, cell.height))
        image.styles.width = cols
        image.styles.height = rows


class SampleView(Vertical):
    DEFAULT_CSS = """
    SampleView { height: 1fr; width: 1fr; }
    SampleView #sample-title { height: 1; color: $text-muted; }
    SampleView Horizontal { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path: Path | None = None

    def compose(self) -> ComposeResult:
        yield Static("no samples yet (written at every evaluation)", id="sample-title")
        with Horizontal():
            for suffix, title, meaning in GROUPS:
                yield SamplePanel(title, meaning, id=f"samples{suffix or '-batch'}")

    def show(self, path: Path | None) -> None:
        """``path``: the batch grid of the latest evaluation; its fragile/robust siblings follow."""
        if path is None or path == self.path or not path.exists():
            return
        self.path = path
        self.query_one("#sample-title", Static).update(f"synthetic samples at the latest evaluation: {path.name}")
        for suffix, _, _ in GROUPS:
            panel = self.query_one(f"#samples{suffix or '-batch'}", SamplePanel)
            sibling = path.with_name(f"{path.stem}{suffix}{path.suffix}")
            missing = "none at this step" if suffix else "no image"
            if suffix and not any(path.with_name(f"{path.stem}{s}{path.suffix}").exists() for s in ("-fragile", "-robust")):
                missing = "n/a: no ATEsc split saved"
            panel.show(sibling, missing)
