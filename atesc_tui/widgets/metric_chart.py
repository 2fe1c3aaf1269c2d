"""A line chart over steps (textual-plotext) that downsamples long series to the plot width."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

# plotext colour names, in order, for successive series
PALETTE = ("cyan", "orange", "green", "magenta", "red", "blue", "yellow", "white")


def downsample(x: np.ndarray, y: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Min/max per bucket: at most ``2 * buckets`` points that keep every spike visible.

    Non-finite values are dropped first. Short series are returned unchanged.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(y) & np.isfinite(x)
    if not finite.all():
        x, y = x[finite], y[finite]
    n = len(y)
    buckets = max(1, int(buckets))
    if n <= 2 * buckets:
        return x, y
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)[:-1]
    ymin = np.minimum.reduceat(y, edges)
    ymax = np.maximum.reduceat(y, edges)
    ends = np.append(edges[1:], n) - 1
    xs = np.empty(2 * buckets)
    ys = np.empty(2 * buckets)
    xs[0::2] = x[edges]
    xs[1::2] = x[ends]
    ys[0::2] = ymin
    ys[1::2] = ymax
    return xs, ys


class MetricChart(PlotextPlot):
    """One chart, several named series. ``set_series`` is cheap; plotting happens at render time."""

    DEFAULT_CSS = """
    MetricChart {
        height: 1fr;
        width: 1fr;
        min-height: 6;
    }
    """

    MARKER = "hd"  # half-block 2x2 dots: about twice as fast to build as braille in plotext

    def __init__(self, title: str, *, y_range: tuple[float, float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.y_range = y_range
        self._series: list[tuple[str, np.ndarray, np.ndarray, str]] = []
        self.last_points = 0  # points handed to plotext at the last render (after downsampling)
        self._data_version = 0
        self._cache_key: tuple | None = None
        self._cache: RenderResult | None = None

    def set_series(self, series: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> None:
        """``[(label, xs, ys), ...]``; colours follow the order given."""
        self._series = [
            (label, np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), PALETTE[i % len(PALETTE)])
            for i, (label, xs, ys) in enumerate(series)
        ]
        self._data_version += 1
        self.refresh()

    def build_plot(self, width: int, height: int) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        # about one bucket (its min and max) per text column, capped: plotext cost grows with points
        buckets = max(8, min(width - 10, 60))
        points = 0
        for label, xs, ys, color in self._series:
            if len(ys) == 0:
                continue
            dx, dy = downsample(xs, ys, buckets)
            if len(dy) == 0:
                continue
            points += len(dy)
            plt.plot(dx.tolist(), dy.tolist(), label=label, color=color, marker=self.MARKER)
        if self.y_range is not None:
            plt.ylim(*self.y_range)
        if points == 0:
            plt.xlim(0, 1)
        self.last_points = points

    def render(self) -> RenderResult:
        """Rebuilt only when the data, the size or the theme changed (tab switches, scrolling and
        other refreshes reuse the last canvas)."""
        width, height = self.size.width, self.size.height
        if width < 10 or height < 4:
            return Text(self.title)
        key = (self._data_version, width, height, self.app.theme, self.theme)
        if key != self._cache_key or self._cache is None:
            self.build_plot(width, height)
            self._cache = super().render()
            self._cache_key = key
        return self._cache

    def invalidate(self) -> None:
        """Force the next render to rebuild the plot (benchmarks)."""
        self._cache_key = None
