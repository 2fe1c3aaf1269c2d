"""A scalar chart over steps in the spirit of TensorBoard's: legend with last values above the
plot, axis labels, a caption saying what it measures, EMA smoothing, log scale, reference lines,
resume markers, gaps for missing values, and a read-out of the values under the mouse."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.console import Group
from rich.text import Text
from textual import events
from textual.app import RenderResult
from textual.widget import Widget

from atesc_tui.widgets.braille_plot import Line, Plot, ema, render_plot

# rich colour names, in order, for successive series (readable on dark and light themes)
PALETTE = ("cyan", "dark_orange", "green", "magenta", "red", "blue", "yellow", "bright_black")


class MetricChart(Widget):
    """One chart, several named series. Setters are cheap; drawing happens at render time and
    is cached until the data, the size, the toggles or the mouse position change."""

    DEFAULT_CSS = """
    MetricChart {
        height: 1fr;
        width: 1fr;
        min-height: 7;
    }
    """

    def __init__(
        self,
        title: str,
        *,
        y_range: tuple[float, float] | None = None,
        caption: str = "",
        fmt: str = "{:.3g}",
        smoothable: bool = True,
        loggable: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.y_range = y_range
        self.caption = caption
        self.fmt = fmt
        self.smoothable = smoothable
        self.loggable = loggable
        self.smoothing = 0.0  # EMA weight; 0 = off
        self.log_scale = False
        self._series: list[tuple[str, np.ndarray, np.ndarray, str]] = []
        self.references: list[tuple[str, float, str]] = []
        self.markers: list[float] = []
        self.x_range: tuple[float, float] | None = None
        self.note = ""
        self.hover_x: float | None = None
        self.drawn: dict[str, np.ndarray] = {}  # y values as drawn at the last render (tests)
        self.last_points = 0  # finite points drawn at the last render
        self._version = 0
        self._cache_key: tuple | None = None
        self._cache: RenderResult | None = None
        self._xmap: dict = {}

    # ---- data ---------------------------------------------------------------------------------

    def set_series(
        self, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], colors: Sequence[str] | None = None
    ) -> None:
        """``[(label, xs, ys), ...]``; colours follow the order given unless ``colors`` names them."""
        colors = colors or [PALETTE[i % len(PALETTE)] for i in range(len(series))]
        self._series = [
            (label, np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), color)
            for (label, xs, ys), color in zip(series, colors)
        ]
        self._changed()

    def set_context(
        self,
        *,
        x_range: tuple[float, float] | None = None,
        references: Sequence[tuple[str, float, str]] = (),
        markers: Sequence[float] = (),
        note: str = "",
    ) -> None:
        """Shared step axis, reference lines ``(label, y, colour)``, resume markers, empty-plot note."""
        new = (x_range, list(references), list(markers), note)
        if new != (self.x_range, self.references, self.markers, self.note):
            self.x_range, self.references, self.markers, self.note = new
            self._changed()

    def set_view(self, *, smoothing: float | None = None, log_scale: bool | None = None) -> None:
        if smoothing is not None and self.smoothable:
            self.smoothing = smoothing
        if log_scale is not None and self.loggable:
            self.log_scale = log_scale
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        self.refresh()

    # ---- drawing ------------------------------------------------------------------------------

    def plot(self) -> Plot:
        lines: list[Line] = []
        status = []
        smooth = self.smoothing if self.smoothable else 0.0
        if smooth:
            status.append(f"EMA {smooth:g}")
        if self.log_scale and self.loggable:
            status.append("log")
        hover = self.hover_x
        for label, xs, ys, color in self._series:
            value = _last_finite(ys)
            if hover is not None and xs.size:
                i = int(np.searchsorted(xs, hover, side="right")) - 1
                value = float(ys[i]) if i >= 0 else None
            if smooth and ys.size:
                lines.append(Line(label, xs, ys, color, faint=True))
                ys = ema(ys, smooth)
            lines.append(Line(label, xs, ys, color, value=value))
        if hover is not None:
            status.append(f"@ step {hover:.0f}")
        return Plot(
            title=self.title,
            lines=lines,
            x_range=self.x_range,
            y_range=self.y_range,
            log_y=self.log_scale and self.loggable,
            references=self.references,
            markers=self.markers,
            caption=self.caption,
            note=self.note,
            fmt=self.fmt,
            status=", ".join(status),
        )

    def render(self) -> RenderResult:
        width, height = self.size.width, self.size.height
        if width < 12 or height < 3:
            return Text(self.title)
        key = (self._version, width, height, self.hover_x)
        if key != self._cache_key or self._cache is None:
            plot = self.plot()
            rows, self._xmap = render_plot(plot, width, height)
            self.drawn = {ln.label: ln.y for ln in plot.lines if not ln.faint}
            self.last_points = sum(int(np.isfinite(ln.y).sum()) for ln in plot.lines if not ln.faint)
            self._cache = Group(*rows)
            self._cache_key = key
        return self._cache

    def invalidate(self) -> None:
        """Force the next render to rebuild the plot (benchmarks)."""
        self._cache_key = None

    # ---- mouse read-out ---------------------------------------------------------------------

    def on_mouse_move(self, event: events.MouseMove) -> None:
        m = self._xmap
        if not m or not self._series:
            return
        col = event.x - m["col0"]
        hover = None
        if 0 <= col < m["cols"]:
            hover = m["x0"] + (col + 0.5) / m["cols"] * (m["x1"] - m["x0"])
        if hover != self.hover_x:
            self.hover_x = hover
            self.refresh()

    def on_leave(self, event: events.Leave) -> None:
        if self.hover_x is not None:
            self.hover_x = None
            self.refresh()


def _last_finite(ys: np.ndarray) -> float | None:
    ok = np.flatnonzero(np.isfinite(ys))
    return float(ys[ok[-1]]) if ok.size else None
