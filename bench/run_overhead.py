"""Per-step cost of ATEsc and of the event stream + live panels, measured side by side.

Usage: python bench/run_overhead.py [--blocks 6] [--per-block 4] [--threads 1]
Writes bench/run_overhead.md. One trainer (quickstart sizes) alternates blocks of steps:
DFQ alone, DFQ + ATEsc (the defaults), DFQ + ATEsc with adv_mask on, and DFQ + ATEsc with every
event written to events.jsonl and drawn by the rich panels. Interleaving puts machine noise on every mode alike.
Targets (issue 2): ATEsc / base <= 1.3; events+panels on / off <= 1.02.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from core.config import load_config
from core.rundir.events import EventWriter
from core.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--per-block", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default=None, help="data/teacher cache (default: data.root)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = [f"run.threads={args.threads}", "run.device=cpu"] + ([f"data.root={args.root}"] if args.root else [])
    cfg = load_config(Path(__file__).resolve().parents[1] / "presets" / "quickstart.toml", sets)
    run_dir = Path(tempfile.mkdtemp()) / "run"
    run_dir.mkdir()
    trainer = Trainer(cfg, run_dir)
    trainer._build()
    from atesc_tui.panels import LivePanels

    panels = LivePanels(cfg, run_dir, console=Console(file=io.StringIO(), force_terminal=True, width=120))
    writer = EventWriter(run_dir / "events.jsonl")
    # (ATEsc on, adv_mask on, events + panels on)
    modes = {"DFQ (base)": (False, False, False), "DFQ + ATEsc": (True, False, False),
             "DFQ + ATEsc, adv_mask on": (True, True, False), "DFQ + ATEsc + events + panels": (True, False, True)}
    times: dict[str, list[float]] = {m: [] for m in modes}
    trainer.train_step()  # warm-up (allocations, first-call overheads)
    with panels:
        for _ in range(args.blocks):
            for mode, (atesc, adv_mask, observed) in modes.items():
                trainer.cfg.atesc.enabled = atesc
                trainer.cfg.atesc.adv_mask = adv_mask
                trainer.writer, trainer.sinks = (writer, [panels.on_event]) if observed else (None, [])
                for _ in range(args.per_block):
                    t0 = time.perf_counter()
                    trainer.emit(trainer.train_step())
                    times[mode].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    base = med["DFQ (base)"]
    lines = ["# Trainer step overhead", "",
             f"`python bench/run_overhead.py --blocks {args.blocks} --per-block {args.per_block} --threads {args.threads}`"
             f" (quickstart sizes: batch {cfg.dfkd.batch_size}, {cfg.dfkd.student_steps} student steps, generator "
             f"width {cfg.generator.width}; ATEsc: score {cfg.atesc.score}, split {cfg.atesc.split}, eps {cfg.atesc.eps}, "
             f"steps {cfg.atesc.steps}; CPU, {args.threads} thread(s); "
             f"{len(times['DFQ (base)'])} steps per mode, interleaved)", "",
             "| mode | median s / step | ratio |", "|---|---|---|"]
    for mode, value in med.items():
        lines.append(f"| {mode} | {value:.3f} | {value / base:.3f} |")
    lines += ["", f"ATEsc / base: **{med['DFQ + ATEsc'] / base:.2f}** with the defaults (target <= 1.3); "
              f"**{med['DFQ + ATEsc, adv_mask on'] / base:.2f}** with adv_mask on (a second attack, on the generator's batch); "
              f"events + panels on / off: **{med['DFQ + ATEsc + events + panels'] / med['DFQ + ATEsc']:.3f}** (target <= 1.02)."]
    text = "\n".join(lines) + "\n"
    Path(__file__).with_name("run_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
