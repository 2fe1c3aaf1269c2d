"""Line plots drawn with braille dots and numpy: axes, gaps, reference lines, markers, overlaps.

Each text cell holds 2x4 braille dots. A series is rasterized into a dot grid: the span of its
values inside each dot column, plus interpolated segments between columns. The cost therefore
grows with the plot's size and (linearly, in numpy) with the points, never with Python loops
over points. A NaN in a series is a gap: the line stops and starts again after it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.text import Text

# bit of each dot, [row from the top][column], in the Unicode braille block (U+2800)
_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int32)
OVERLAP_STYLE = "bold"  # cells where two series share dots: the text colour, so neither hides the other


@dataclass
class Line:
    label: str
    x: np.ndarray
    y: np.ndarray
    color: str
    faint: bool = False  # the raw series drawn dim behind its smoothed line; not in the legend
    value: float | None = None  # shown in the legend (last raw value, or the value under the mouse)


@dataclass
class Plot:
    """Everything one chart draws; ``render_plot`` turns it into lines of text."""

    title: str
    lines: list[Line] = field(default_factory=list)
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    log_y: bool = False
    references: list[tuple[str, float, str]] = field(default_factory=list)  # (label, y, colour)
    markers: list[float] = field(default_factory=list)  # x positions (resume points)
    marker_label: str = "resumed"
    x_title: str = "step"
    caption: str = ""
    note: str = ""  # shown in the empty plot area (e.g. "n/a: ATEsc is off")
    fmt: str = "{:.3g}"  # legend values
    status: str = ""  # right of the title: "EMA 0.6", "log", "@ step 120"


def ema(y: np.ndarray, weight: float, block: int = 64) -> np.ndarray:
    """TensorBoard's debiased exponential moving average; NaNs are skipped and stay NaN.

    Blocked so it runs in numpy: inside a block of ``block`` points the average is a matrix
    product, and only the carry between blocks is a Python loop (n / block iterations).
    """
    y = np.asarray(y, dtype=float)
    out = np.full_like(y, np.nan)
    ok = np.flatnonzero(np.isfinite(y))
    if weight <= 0 or ok.size == 0:
        return y.copy()
    v = y[ok]
    n = v.size
    pad = (-n) % block
    vb = np.concatenate([v, np.zeros(pad)]).reshape(-1, block)
    j = np.arange(block)
    powers = weight ** (j[:, None] - j[None, :]).clip(min=0)
    mat = np.where(j[:, None] >= j[None, :], (1 - weight) * powers, 0.0)  # [out j, in i]
    local = vb @ mat.T
    # carry between blocks: the last value of each block, decayed into the next (floats only)
    ends = local[:, -1].tolist()
    wb = weight**block
    carry = [0.0] * len(ends)
    for b in range(1, len(ends)):
        carry[b] = ends[b - 1] + wb * carry[b - 1]
    local += np.asarray(carry)[:, None] * (weight ** (j + 1))[None, :]
    s = local.reshape(-1)[:n]
    # debias the first points (1 - w^k is 1.0 in float64 beyond k ~ 37 / -log10(w))
    k = min(n, int(37 / max(1e-9, -math.log10(weight))) + 1)
    s[:k] /= 1 - weight ** np.arange(1, k + 1)
    out[ok] = s
    return out


def nice_ticks(lo: float, hi: float, count: int, integer: bool = False) -> np.ndarray:
    """Round values (1, 2, 2.5, 5 x 10^k apart) in [lo, hi]: the spacing whose number of
    ticks is closest to ``count``, with at least two when the range allows."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    mults = (1, 2, 5) if integer else (1, 2, 2.5, 5)
    best: tuple[tuple[bool, int], np.ndarray] | None = None
    for step in (m * mag * f for f in (0.1, 1, 10) for m in mults):
        if integer and step < 1:
            continue
        first = math.ceil(lo / step - 1e-9) * step
        ticks = np.arange(first, hi + step * 1e-6, step)
        score = (ticks.size < 2, abs(ticks.size - count))
        if best is None or score < best[0]:
            best = (score, ticks)
    return best[1]


def fmt_tick(v: float, step: float) -> str:
    """A tick label with as many decimals as the tick spacing needs (0.025 apart: 3)."""
    if abs(v) >= 10_000 and step >= 1000:
        return f"{v / 1000:g}k"
    decimals = 0
    while decimals < 6 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return f"{v:.{decimals}f}"


def _log_ticks(lo: float, hi: float) -> tuple[np.ndarray, list[str]]:
    """Ticks for a log10 axis, given in log10 units: decades, or 1-2-5 within few decades."""
    d0, d1 = math.floor(lo), math.ceil(hi)
    mult = (1, 2, 5) if d1 - d0 <= 2 else (1,)
    vals = [math.log10(m) + d for d in range(d0, d1 + 1) for m in mult]
    vals = [v for v in vals if lo - 1e-9 <= v <= hi + 1e-9] or [lo, hi]
    return np.array(vals), [f"{10 ** v:.3g}" for v in vals]


def _rasterize(px: np.ndarray, py: np.ndarray, dw: int, dh: int) -> np.ndarray:
    """Dot grid [row from the bottom, column] of a polyline in dot coordinates (NaN = gap)."""
    dots = np.zeros((dh, dw), dtype=bool)
    idx = np.flatnonzero(~(np.isnan(px) | np.isnan(py)))
    if idx.size == 0:
        return dots
    if idx.size < px.size:
        px, py = px[idx], py[idx]
    # integer dot coordinates (ints clip much faster than floats)
    cx = np.minimum(np.maximum((px + 0.5).astype(np.int64), 0), dw - 1)
    cy = np.minimum(np.maximum((py + 0.5).astype(np.int64), 0), dh - 1)
    # the vertical span of the values inside each dot column (dense data: this is the line)
    lo = np.full(dw, dh, dtype=np.int64)
    hi = np.full(dw, -1, dtype=np.int64)
    np.minimum.at(lo, cx, cy)
    np.maximum.at(hi, cx, cy)
    cols = np.flatnonzero(hi >= 0)
    diff = np.zeros((dh + 1, dw), dtype=np.int32)
    np.add.at(diff, (lo[cols], cols), 1)
    np.add.at(diff, (hi[cols] + 1, cols), -1)
    dots |= np.cumsum(diff, axis=0)[:dh] > 0
    # segments between consecutive points that sit in different columns (sparse data)
    linked = (idx[1:] == idx[:-1] + 1) & (cx[1:] != cx[:-1])
    if linked.any():
        a = np.flatnonzero(linked)
        fx = np.clip(px[np.concatenate([a, a + 1])], 0, dw - 1)
        fy = np.clip(py[np.concatenate([a, a + 1])], 0, dh - 1)
        x0, x1, y0, y1 = fx[: a.size], fx[a.size :], fy[: a.size], fy[a.size :]
        n = np.minimum(np.ceil(np.maximum(np.abs(x1 - x0), np.abs(y1 - y0))).astype(np.int64) + 1, dw + dh)
        rep = np.repeat(np.arange(n.size), n)
        start = np.cumsum(n) - n
        t = (np.arange(rep.size) - start[rep]) / np.maximum(n[rep] - 1, 1)
        xs = np.rint(x0[rep] + (x1 - x0)[rep] * t).astype(np.int64)
        ys = np.rint(y0[rep] + (y1 - y0)[rep] * t).astype(np.int64)
        dots[ys, xs] = True
    return dots


def _cells(dots: np.ndarray) -> np.ndarray:
    """Braille code offsets [cell row from the top, cell column] of a bottom-up dot grid."""
    dh, dw = dots.shape
    top_down = dots[::-1].reshape(dh // 4, 4, dw // 2, 2)
    return (top_down * _BITS[None, :, None, :]).sum(axis=(1, 3))


def _nanmin(a: np.ndarray) -> float:
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmin(a)) if a.size else math.nan


def _nanmax(a: np.ndarray) -> float:
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmax(a)) if a.size else math.nan


def _fit(text: Text, width: int) -> Text:
    text.truncate(width, overflow="ellipsis", pad=True)
    return text


def legend(plot: Plot, full: bool = True, labels: bool = True) -> Text:
    """Each series' colour, label and value; with ``full``, the reference lines and markers too;
    without ``labels``, colours and values only (compare: its table maps colours to runs)."""
    out = Text()
    for line in plot.lines:
        if line.faint:
            continue
        out.append("━ ", style=line.color)
        val = "n/a" if line.value is None or not math.isfinite(line.value) else plot.fmt.format(line.value)
        if labels:
            out.append(f"{line.label} ")
        out.append(val, style="bold")
        out.append("  ")
    if full:
        for label, value, color in plot.references:
            out.append("┈ ", style=color)
            out.append(f"{label} {plot.fmt.format(value)}  ", style="dim")
        if plot.markers:
            out.append("┊ ", style="yellow")
            out.append(f"{plot.marker_label}  ", style="dim")
    out.rstrip()
    return out


def _header(plot: Plot, width: int, height: int) -> list[Text]:
    """Title and legend on one line if they fit (dropping reference entries first), else on two
    lines when the chart has rows to spare; labels are dropped before values are cut."""
    title = Text(plot.title, style="bold")
    if plot.status:
        title.append(f"  [{plot.status}]", style="dim")
    for full in (True, False):
        leg = legend(plot, full)
        if title.cell_len + 2 + leg.cell_len <= width:
            return [Text.assemble(title, "  ", leg)]
    two_lines = height >= 8
    room = width if two_lines else width - title.cell_len - 2
    leg = next(
        (lg for lg in (legend(plot, f, lab) for lab in (True, False) for f in (True, False)) if lg.cell_len <= room),
        legend(plot, False, False),
    )
    return [title, leg] if two_lines else [Text.assemble(title, "  ", leg)]


def render_plot(plot: Plot, width: int, height: int) -> tuple[list[Text], dict]:
    """Lines of text exactly ``width`` wide; and the x mapping ``{"x0", "x1", "col0", "cols"}``
    (the plot's first text column and its width) for mouse read-outs."""
    header = _header(plot, width, height)
    footer_rows = 2 if height >= 7 and plot.caption else 1
    ph = max(1, height - len(header) - footer_rows)

    # ranges
    drawn = [ln for ln in plot.lines if ln.y.size]
    if plot.x_range is not None:
        x0, x1 = plot.x_range
    elif drawn:
        x0 = min(_nanmin(ln.x) for ln in drawn)
        x1 = max(_nanmax(ln.x) for ln in drawn)
    else:
        x0, x1 = 0.0, 1.0
    if not (math.isfinite(x0) and math.isfinite(x1)):
        x0, x1 = 0.0, 1.0
    if x1 <= x0:
        x1 = x0 + 1.0

    def ty(y: np.ndarray) -> np.ndarray:
        if not plot.log_y:
            return y
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), np.nan)

    ys_t = [ty(ln.y) for ln in plot.lines]
    if plot.y_range is not None and not plot.log_y:
        y0, y1 = plot.y_range
    else:
        refs = ty(np.array([r[1] for r in plot.references], dtype=float))
        lows = [_nanmin(v) for v in [*ys_t, refs] if v.size]
        highs = [_nanmax(v) for v in [*ys_t, refs] if v.size]
        lows = [v for v in lows if math.isfinite(v)]
        highs = [v for v in highs if math.isfinite(v)]
        if lows and highs:
            y0, y1 = min(lows), max(highs)
            pad = (y1 - y0) * 0.05 or (abs(y1) * 0.1 if y1 else 1.0)
            if not plot.log_y and y0 >= 0 and y0 - pad < 0:
                y0, y1 = 0.0, y1 + pad  # a non-negative quantity keeps 0 as its floor
            else:
                y0, y1 = y0 - pad, y1 + pad
        else:
            y0, y1 = (0.0, 1.0)

    # y ticks and the label column
    if plot.log_y:
        yt, ylabels = _log_ticks(y0, y1)
    else:
        yt = nice_ticks(y0, y1, max(3, ph // 2))
        ystep = float(yt[1] - yt[0]) if yt.size > 1 else 1.0
        ylabels = [fmt_tick(v, ystep) for v in yt]
    lw = max((len(s) for s in ylabels), default=1)
    pw = max(1, width - lw - 1)
    dw, dh = 2 * pw, 4 * ph

    def dot_x(x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=float) - x0) / (x1 - x0) * (dw - 1)

    def dot_y(yt_: np.ndarray) -> np.ndarray:
        return (yt_ - y0) / (y1 - y0) * (dh - 1)

    # layers, each a braille code grid; later layers win the colour of a cell
    codes = np.zeros((ph, pw), dtype=np.int32)
    style_idx = np.zeros((ph, pw), dtype=np.int32)
    styles: list[str] = [""]

    def layer(dots: np.ndarray, style: str) -> None:
        c = _cells(dots)
        styles.append(style)
        codes[:] |= c
        style_idx[c > 0] = len(styles) - 1

    for _label, value, color in plot.references:
        v = ty(np.array([value], dtype=float))[0]
        if math.isfinite(v) and y0 <= v <= y1:
            dots = np.zeros((dh, dw), dtype=bool)
            dots[int(round(dot_y(np.array([v]))[0])), ::4] = True
            layer(dots, f"dim {color}")
    for m in plot.markers:
        c = int(round(dot_x(np.array([m]))[0]))
        if 0 <= c < dw:
            dots = np.zeros((dh, dw), dtype=bool)
            dots[::2, c] = True
            layer(dots, "yellow")
    for ln, yv in zip(plot.lines, ys_t):
        if ln.faint and ln.y.size:
            layer(_rasterize(dot_x(ln.x), dot_y(yv), dw, dh), f"dim {ln.color}")
    # a cell where two series share a dot (not merely the cell) is drawn in the overlap style
    hits = np.zeros((dh, dw), dtype=np.int32)
    for ln, yv in zip(plot.lines, ys_t):
        if not ln.faint and ln.y.size:
            dots = _rasterize(dot_x(ln.x), dot_y(yv), dw, dh)
            layer(dots, ln.color)
            hits += dots
    shared = _cells(hits >= 2) > 0
    if shared.any():
        styles.append(OVERLAP_STYLE)
        style_idx[shared] = len(styles) - 1

    # text rows: y label, axis, cells
    tick_rows: dict[int, str] = {}
    for v, s in zip(yt, ylabels):
        r = ph - 1 - int(round(dot_y(np.array([v]))[0])) // 4
        if 0 <= r < ph:
            tick_rows.setdefault(r, s)
    chars = np.where(codes > 0, 0x2800 + codes, 0x20)
    rows: list[Text] = list(header)
    for r in range(ph):
        row = Text()
        row.append(tick_rows.get(r, "").rjust(lw) + ("┤" if r in tick_rows else "│"), style="dim")
        line = "".join(map(chr, chars[r]))
        sid = style_idx[r]
        cuts = [0, *(np.flatnonzero(np.diff(sid)) + 1).tolist(), pw]
        for a, b in zip(cuts[:-1], cuts[1:]):
            row.append(line[a:b], style=styles[sid[a]] or None)
        rows.append(row)
    if plot.note and not any(ln.y.size and np.isfinite(ln.y).any() for ln in plot.lines):
        mid = len(header) + ph // 2
        note = plot.note[:pw]
        pad = (pw - len(note)) // 2
        rows[mid] = Text.assemble((" " * lw + "│" + " " * pad, "dim"), (note, "italic"))

    # x axis: tick labels under their columns, then the axis title
    xaxis = [" "] * width
    xt = nice_ticks(x0, x1, max(1, pw // 10), integer=True)
    xstep = float(xt[1] - xt[0]) if xt.size > 1 else 1.0
    title_room = len(plot.x_title) + 1
    taken = -1
    for v in xt:
        s = fmt_tick(float(v), xstep)
        col = lw + 1 + int(round(dot_x(np.array([v]))[0])) // 2
        start = max(lw + 1, min(col - len(s) // 2, width - title_room - len(s)))
        if start <= taken + 1:
            continue
        xaxis[start : start + len(s)] = list(s)
        taken = start + len(s)
    xline = "".join(xaxis)
    xline = xline[: width - len(plot.x_title)] + plot.x_title
    rows.append(Text(xline, style="dim"))
    if footer_rows == 2:
        rows.append(Text(plot.caption, style="italic dim"))
    rows = [_fit(r, width) for r in rows[:height]]
    return rows, {"x0": x0, "x1": x1, "col0": lw + 1, "cols": pw}
