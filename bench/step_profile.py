"""Where a training step's time goes, and the FLOP/s it reaches against this machine's matmul peak.

Usage: python bench/step_profile.py [--preset quickstart] [--threads 2] [--blocks 6] [--per-block 3]
                                    [--configs dfq,dfq+atesc,dfq+atesc+gen,cmi,...] [--contiguous] [--set k=v ...]

One trainer per configuration (DFQ and CMI; ATEsc off, on, and on with the generator-side split),
built once, then stepped in
interleaved blocks so machine noise lands on every configuration alike. The parts of a step are
timed by wrapping the trainer's own components (nothing of the step is re-implemented here):

- generator update: ``Synthesizer.generator_step`` less the parts below that it calls;
- generator samples: ``Synthesizer.sample``, the student's batches (one per step, or one per
  student step with ``dfkd.fresh_batches``);
- teacher + attack: ``ATEsc.analyze`` (clean teacher forward, attack, adversarial forward), also
  when the generator-side guide calls it, with ATEsc on; ``ATEsc.teacher_logits`` (the clean
  forward) with it off;
- student steps: the rest of ``Trainer.train_step``;
- evaluation, events, checkpoints: ``Trainer.evaluate``, one event written to events.jsonl, and
  ``Trainer.save``, each also shown per step, amortised over ``run.eval_every`` / ``run.checkpoint_every``.

FLOPs come from ``torch.utils.flop_counter`` over one step (a separate, untimed pass); the fp32
matmul peak (n=1024, best of several) is measured at the same thread count in the same run, before
and after the steps. Appends its tables to bench/step_profile.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench.record import append, load_average  # noqa: E402
from core.config import load_config  # noqa: E402
from core.rundir.events import EventWriter  # noqa: E402
from core.train import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# name -> (dfkd.method, atesc.enabled, further overrides); "+gen": ATEsc also splits the generator's batch
CONFIGS: dict[str, tuple[str, bool, list[str]]] = {
    "dfq": ("dfq", False, []), "dfq+atesc": ("dfq", True, []), "dfq+atesc+gen": ("dfq", True, ["atesc.generator_split=true"]),
    "cmi": ("cmi", False, []), "cmi+atesc": ("cmi", True, []), "cmi+atesc+gen": ("cmi", True, ["atesc.generator_split=true"]),
}
PARTS = ("generator update", "generator samples", "teacher + attack", "student steps")


class _Global:
    """Stands in for FlopCounterMode's module tracker, whose hooks break ``autograd.grad`` with
    respect to an input (the attack). Only totals are needed here."""

    parents = {"Global"}

    def __enter__(self) -> _Global:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _Global()  # type: ignore[assignment]
    return counter


def matmul_peak(n: int = 1024, repeats: int = 8) -> float:
    """Best fp32 GFLOP/s of an n x n matmul at torch's current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


class Probe:
    """Wraps named bound methods of a trainer and accumulates their *exclusive* seconds (and FLOPs
    when counting): time in a wrapped call made inside another (the generator step attacking its
    batch, or drawing the student's) counts for the inner part only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, int] = defaultdict(int)
        self.counter: FlopCounterMode | None = None
        self._stack: list[list[float]] = []  # [seconds, flops] spent in nested wrapped calls

    def wrap(self, obj: Any, attr: str, part: str) -> None:
        fn: Callable[..., Any] = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            f0 = self.counter.get_total_flops() if self.counter is not None else 0
            t0 = time.perf_counter()
            self._stack.append([0.0, 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                inner_s, inner_f = self._stack.pop()
                seconds = time.perf_counter() - t0
                flops = (self.counter.get_total_flops() - f0) if self.counter is not None else 0
                self.seconds[part] += seconds - inner_s
                self.flops[part] += int(flops - inner_f)
                if self._stack:
                    self._stack[-1][0] += seconds
                    self._stack[-1][1] += flops

        setattr(obj, attr, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.flops.clear()


def build(preset: Path, name: str, threads: int, sets: list[str], root: Path,
          contiguous: bool = False) -> tuple[Trainer, Probe]:
    method, atesc, extra = CONFIGS[name]
    cfg = load_config(preset, [f"dfkd.method={method}", f"atesc.enabled={str(atesc).lower()}", *extra,
                               f"run.threads={threads}", "run.device=cpu", *sets])
    run_dir = root / f"{name}-{contiguous}"
    run_dir.mkdir(parents=True)
    trainer = Trainer(cfg, run_dir)
    trainer._build()
    if contiguous:  # the layout the trainer used on CPU before channels_last
        for module in (trainer.teacher, trainer.student, trainer.synth.generator):
            module.to(memory_format=torch.contiguous_format)
    trainer.writer = EventWriter(run_dir / "events.jsonl")
    probe = Probe()
    probe.wrap(trainer.synth, "generator_step", "generator update")
    probe.wrap(trainer.synth, "sample", "generator samples")
    probe.wrap(trainer.atesc, "analyze", "teacher + attack")
    probe.wrap(trainer.atesc, "teacher_logits", "teacher + attack")
    return trainer, probe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--per-block", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"any of {', '.join(CONFIGS)}")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--contiguous", action="store_true",
                        help="also run each configuration with contiguous (NCHW) models, for the channels_last ratio")
    args = parser.parse_args()
    from core.presets import resolve_preset

    preset = resolve_preset(args.preset)
    torch.set_num_threads(args.threads)
    load0 = load_average()
    names = args.configs.split(",")
    peaks = [matmul_peak()]
    with tempfile.TemporaryDirectory() as tmp:
        if args.contiguous:
            names = [n for name in names for n in (name, f"{name}/contiguous")]
        built = {name: build(preset, name.split("/")[0], args.threads, args.sets, Path(tmp),
                             contiguous=name.endswith("/contiguous")) for name in names}
        flops: dict[str, dict[str, int]] = {}
        for name, (trainer, probe) in built.items():
            trainer.emit(trainer.train_step())  # warm-up: first-call allocations
            probe.counter = flop_counter()
            with probe.counter:
                trainer.train_step()
            total_flops = probe.counter.get_total_flops()
            flops[name] = {**probe.flops, "student steps": total_flops - sum(probe.flops.values()), "total": total_flops}
            probe.counter = None
            probe.reset()
        steps: dict[str, list[float]] = defaultdict(list)
        parts: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in names}
        for _ in range(args.blocks):
            for name, (trainer, probe) in built.items():
                for _ in range(args.per_block):
                    probe.reset()
                    t0 = time.perf_counter()
                    event = trainer.train_step()
                    total = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    trainer.emit(event)
                    parts[name]["events"].append(time.perf_counter() - t1)
                    steps[name].append(total)
                    for part in PARTS[:3]:
                        parts[name][part].append(probe.seconds.get(part, 0.0))
                    parts[name]["student steps"].append(total - sum(probe.seconds.values()))
        for name, (trainer, _) in built.items():
            for _ in range(2):
                t0 = time.perf_counter()
                trainer.evaluate()
                parts[name]["evaluation"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                trainer.save()
                parts[name]["checkpoint"].append(time.perf_counter() - t0)
        peaks.append(matmul_peak())
        cfg0 = built[names[0]][0].cfg
    peak = max(peaks)
    med = {n: statistics.median(v) for n, v in steps.items()}
    lines = [f"Preset `{args.preset}`: batch {cfg0.dfkd.batch_size}, {cfg0.dfkd.student_steps} student steps, "
             f"eval every {cfg0.run.eval_every}, checkpoint every {cfg0.run.checkpoint_every}; {args.threads} thread(s); "
             f"{len(steps[names[0]])} steps per configuration, interleaved in {args.blocks} blocks. "
             f"fp32 matmul peak (n=1024) at {args.threads} thread(s): {peak:.1f} GFLOP/s "
             f"(before {peaks[0]:.1f}, after {peaks[1]:.1f}).", "",
             "Median ms per step (share of the train step); evaluation and checkpoint: ms per call, then per step amortised.", "",
             "| configuration | step ms | " + " | ".join(PARTS) + " | events | evaluation | checkpoint "
             "| GFLOP / step | GFLOP/s | % of peak | / base step |",
             "|---" * (len(PARTS) + 10) + "|"]
    for name in names:
        p = {k: statistics.median(v) for k, v in parts[name].items()}
        cfg = built[name][0].cfg
        step = med[name]
        gflop = flops[name]["total"] / 1e9
        cells = [f"{p[part] * 1e3:.1f} ({p[part] / step:.0%})" for part in PARTS]
        layout = "/contiguous" if name.endswith("/contiguous") else ""
        base = med.get(name.split("/")[0].split("+")[0] + layout)
        lines.append(
            f"| {name} | {step * 1e3:.1f} | " + " | ".join(cells)
            + f" | {p['events'] * 1e3:.2f} | {p['evaluation'] * 1e3:.0f} ({p['evaluation'] / cfg.run.eval_every * 1e3:.1f}/step) "
            f"| {p['checkpoint'] * 1e3:.0f} ({p['checkpoint'] / cfg.run.checkpoint_every * 1e3:.2f}/step) "
            f"| {gflop:.2f} | {gflop / step:.1f} | {gflop / step / peak:.0%} | {step / base if base else float('nan'):.2f} |")
    if args.contiguous:
        lines += ["", "channels_last / contiguous step time: " + ", ".join(
            f"{n} {med[n] / med[n + '/contiguous']:.2f}" for n in names if not n.endswith("/contiguous"))]
    lines += ["", "GFLOP per part of one step: " + "; ".join(
        f"{n}: " + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in flops[n].items() if k != "total") for n in names)]
    print("\n".join(lines))
    print(f"appended to {append('step_profile.md', 'Step-time breakdown and FLOP/s', lines, load0)}")


if __name__ == "__main__":
    main()
