"""Monitor header: status, progress, teacher accuracies, config summary, throughput and ETA."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from core.rundir.history import RunHistory


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def config_summary(hist: RunHistory) -> str:
    start = hist.start
    if start is None:
        return "waiting for the run to start"
    cfg = start.config or {}
    data = cfg.get("data", {})
    at = cfg.get("atesc", {})
    parts = [
        f"{data.get('id_domain', '?')} -> {data.get('ood_domain', '?')}",
        f"teacher {start.teacher_kind}",
        f"{start.method}",
        "ATEsc " + (f"on ({at.get('score', '?')}/{at.get('split', '?')}, eps {at.get('eps', '?')})" if start.atesc else "off"),
        f"{start.device}",
    ]
    return " | ".join(parts)


class RunHeader(Static):
    DEFAULT_CSS = """
    RunHeader { height: auto; padding: 0 1; background: $boost; }
    """

    def show(self, name: str, hist: RunHistory, skipped: int, alive: bool) -> None:
        status = hist.status or "new"
        if status == "running" and not alive:
            status = "stale"
        style = {"running": "bold green", "failed": "bold red", "done": "bold blue", "interrupted": "bold yellow"}.get(
            status, "bold"
        )
        steps = f"{hist.step}/{hist.iterations}" if hist.iterations else str(hist.step)
        sps = hist.samples_per_s
        grid = Table.grid(expand=True, padding=(0, 2))
        grid.add_column(ratio=1)
        grid.add_column(justify="right")
        grid.add_row(
            Text.assemble((name, "bold"), "  ", (status, style), f"  step {steps}"),
            Text(f"teacher ID {_pct(hist.teacher_acc_id)}  OOD {_pct(hist.teacher_acc_ood)}"),
        )
        acc_id = hist.series["student_acc_id"].last
        acc_ood = hist.series["student_acc_ood"].last
        split = hist.series["split_id_ratio"].last
        grid.add_row(
            Text(
                f"student ID {_pct(acc_id)}  OOD {_pct(acc_ood)}  split ID {'-' if split is None else f'{split:.2f}'}"
            ),
            Text(f"{'-' if sps is None else f'{sps:,.0f}'} samples/s  ETA {fmt_duration(hist.eta_s if status == 'running' else None)}"),
        )
        line3 = config_summary(hist)
        if skipped:
            line3 += f"  [{skipped} malformed lines skipped]"
        grid.add_row(Text(line3, style="dim", overflow="ellipsis", no_wrap=True), Text(f"{hist.n_events} events", style="dim"))
        self.update(grid)
