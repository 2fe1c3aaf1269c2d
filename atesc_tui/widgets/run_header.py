"""Monitor header: status, progress and ETA; student and teacher accuracy and the ATEsc split;
the configuration that matters (ATEsc on/off first, so it survives narrow terminals)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from core.rundir.history import RunHistory

STATUS_STYLE = {"running": "bold green", "failed": "bold red", "done": "bold blue", "interrupted": "bold yellow"}


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def atesc_on(hist: RunHistory) -> bool | None:
    return None if hist.start is None else bool(hist.start.atesc)


def eta_s(hist: RunHistory) -> float | None:
    """From the step rate of the current process; right after a resume (fewer than two train
    events yet), from the last throughput and the batch size."""
    if hist.eta_s is not None or not hist.iterations or hist.start is None:
        return hist.eta_s
    sps = hist.samples_per_s
    batch = (hist.start.config.get("dfkd") or {}).get("batch_size")
    if not sps or not isinstance(batch, (int, float)):
        return None
    return max(0, hist.iterations - hist.step) * batch / sps


def config_summary(hist: RunHistory) -> str:
    start = hist.start
    if start is None:
        return "waiting for the run to start"
    cfg = start.config or {}
    data = cfg.get("data", {})
    at = cfg.get("atesc", {})
    parts = [
        "ATEsc " + (f"on ({at.get('score', '?')}/{at.get('split', '?')}, eps {at.get('eps', '?')})" if start.atesc else "off"),
        f"{start.method}",
        f"teacher {start.teacher_kind}",
        f"{data.get('id_domain', '?')} -> {data.get('ood_domain', '?')}",
        f"seed {cfg.get('run', {}).get('seed', '?')}",
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
        steps = f"{hist.step}/{hist.iterations}" if hist.iterations else str(hist.step)
        sps = hist.samples_per_s
        eta = fmt_duration(eta_s(hist) if status == "running" else None)
        grid = Table.grid(expand=True, padding=(0, 1))
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        grid.add_row(
            Text.assemble((status, STATUS_STYLE.get(status, "bold")), f" step {steps}  ETA {eta}  ", (name, "bold")),
            Text(f"{'-' if sps is None else f'{sps:,.0f}'} samples/s"),
        )
        acc_id = hist.series["student_acc_id"].last
        acc_ood = hist.series["student_acc_ood"].last
        split = hist.series["split_id_ratio"].last
        on = atesc_on(hist)
        split_text = "n/a (ATEsc off)" if on is False else ("-" if split is None else f"{100 * split:.0f}%")
        grid.add_row(
            Text.assemble(
                "student ID ", (_pct(acc_id), "bold"), " OOD ", (_pct(acc_ood), "bold"),
                f"  teacher {_pct(hist.teacher_acc_id)}/{_pct(hist.teacher_acc_ood)}  fragile {split_text}",
            ),
            Text(f"{hist.n_events} events", style="dim"),
        )
        line3 = config_summary(hist)
        if skipped:
            line3 = f"[{skipped} malformed lines skipped] " + line3
        grid.add_row(Text(line3, style="dim"), Text(""))
        self.update(grid)
