"""Two or more runs overlaid on the same charts, each labelled by the config fields in which the
compared runs differ (``ATEsc on, seed 1``), with a table of those fields and the final numbers."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from core.rundir import CONFIG_FILE
from core.rundir.history import RunHistory
from core.rundir.summary import summarize_run
from atesc_tui.widgets.config_form import flatten
from atesc_tui.widgets.metric_chart import PALETTE, MetricChart

CHARTS = (
    ("cmp-acc-id", "student ID accuracy (%)", "student_acc_id", 100, (0.0, 100.0), "{:.1f}", "on real ID test images"),
    ("cmp-acc-ood", "student OOD accuracy (%)", "student_acc_ood", 100, (0.0, 100.0), "{:.1f}", "on real OOD test images"),
    ("cmp-split", "fragile share (% of batch)", "split_id_ratio", 100, (0.0, 100.0), "{:.0f}", "ATEsc's ID-like share; n/a without ATEsc"),
    ("cmp-gen", "generator loss", "loss_generator", 1, None, "{:.3g}", "lower: samples match the teacher's statistics"),
)
# fields that differ between any two runs without meaning anything about the experiment
IGNORED = {"run.name", "run.dir", "run.runs_root", "run.threads", "run.device", "data.root", "teacher.path"}
SHORT = {"atesc.enabled": "ATEsc", "run.seed": "seed", "teacher.kind": "teacher", "dfkd.method": "DFKD",
         "dfkd.iterations": "iterations"}


def read_config(run_dir: Path) -> dict[str, Any]:
    try:
        return flatten(tomllib.loads((Path(run_dir) / CONFIG_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def differing_fields(configs: list[dict[str, Any]]) -> list[str]:
    """Dotted keys whose values are not the same in every config (ATEsc, method, teacher, seed first)."""
    keys = {k for c in configs for k in c} - IGNORED
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    first = list(SHORT)
    return sorted(differ, key=lambda k: (first.index(k) if k in first else len(first), k))


def field_header(key: str) -> str:
    return SHORT.get(key, key.rsplit(".", 1)[-1])


def field_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "-" if value is None else str(value)


def run_labels(run_dirs: list[Path], configs: list[dict[str, Any]], fields: list[str], max_fields: int = 3) -> list[str]:
    """``ATEsc on, seed 1``: the differing fields of each run; the run's name when none differ."""
    if not fields:
        return [p.name for p in run_dirs]
    labels = []
    for cfg in configs:
        parts = []
        for k in fields[:max_fields]:
            v = cfg.get(k)
            parts.append(f"ATEsc {field_value(k, v)}" if k == "atesc.enabled" else f"{field_header(k)} {field_value(k, v)}")
        labels.append(", ".join(parts) + (", ..." if len(fields) > max_fields else ""))
    if len(set(labels)) < len(labels):  # differences beyond the fields shown: add the names
        labels = [f"{lab} ({p.name})" for lab, p in zip(labels, run_dirs)]
    return labels


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


class CompareScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "app.smoothing", "Smooth"),
        Binding("l", "app.log_scale", "Log"),
    ]

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.run_dirs = [Path(p) for p in run_dirs]
        self.configs = [read_config(p) for p in self.run_dirs]
        self.fields = differing_fields(self.configs)
        self.labels = run_labels(self.run_dirs, self.configs, self.fields)

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        with Grid(id="compare-grid"):
            for cid, title, key, _, yr, fmt, caption in CHARTS:
                yield MetricChart(title, y_range=yr, fmt=fmt, caption=caption, loggable=key.startswith("loss"), id=cid)
        yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "compare"
        self.sub_title = " vs ".join(self.labels)
        histories = [RunHistory.load(p)[0] for p in self.run_dirs]
        colors = [PALETTE[i % len(PALETTE)] for i in range(len(self.run_dirs))]
        x_max = float(max([1, *(h.step for h in histories)]))
        for cid, _, key, scale, _, _, _ in CHARTS:
            chart = self.query_one(f"#{cid}", MetricChart)
            series = []
            for label, h in zip(self.labels, histories):
                y = np.asarray(h.series[key].y) * scale
                if key == "split_id_ratio" and h.start is not None and not h.start.atesc:
                    y = np.full_like(y, np.nan)  # no split without ATEsc: n/a, not a flat 100 %
                series.append((label, np.asarray(h.series[key].x), y))
            chart.set_series(series, colors)
            chart.set_context(x_range=(0.0, x_max))
        self.apply_view()
        table = self.query_one("#compare-table", DataTable)
        table.add_column("", key="swatch")
        for k in self.fields:
            table.add_column(field_header(k), key=k)
        for label in ("Status", "Step", "ID acc", "best ID", "OOD acc", "Fragile", "Run"):
            table.add_column(label, key=label)
        for i, (p, cfg, h) in enumerate(zip(self.run_dirs, self.configs, histories)):
            s = summarize_run(p)
            split = "n/a" if s.atesc is False else ("-" if s.split_id_ratio is None else f"{100 * s.split_id_ratio:.0f}%")
            table.add_row(
                Text("━━", style=colors[i]),
                *(field_value(k, cfg.get(k)) for k in self.fields),
                s.status,
                str(s.step),
                _pct(s.student_acc_id),
                _pct(s.best_acc_id),
                _pct(s.student_acc_ood),
                split,
                s.name,
                key=str(p),
            )

    def apply_view(self) -> None:
        for chart in self.query(MetricChart):
            chart.set_view(smoothing=self.app.smoothing, log_scale=self.app.log_scale)
