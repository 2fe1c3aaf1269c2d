"""Report figures: PNGs that decode, with the expected pixel size, for a run and for a suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from core.experiments.bench import Bench, Suite, write_results
from core.experiments.diagnostics import auroc, ood_share_curve
from core.rundir.events import EVENTS_FILE, EvalEvent, EventWriter, StartEvent, StatusEvent, TrainEvent
from core.experiments.report import DPI, RUN_FIGSIZE, choose_steps, report, run_report, suite_report
from core.train import save_grid


def _fake_run(run_dir: Path, steps: int = 20, atesc: bool = True, acc: float = 0.5) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text("[dfkd]\nbatch_size = 16\n")
    g = torch.Generator().manual_seed(0)
    with EventWriter(run_dir / EVENTS_FILE) as w:
        w.emit(StartEvent(run_name=run_dir.name, teacher_kind="ntl-target", method="dfq", atesc=atesc, iterations=steps))
        w.emit(EvalEvent(step=0, student_acc_id=0.1, student_acc_ood=0.1, teacher_acc_id=0.93, teacher_acc_ood=0.1))
        for i in range(1, steps + 1):
            share = 0.5 + 0.2 * float(torch.rand((), generator=g)) if atesc else 1.0
            w.emit(TrainEvent(step=i, split_id_ratio=share, split_ood_ratio=1 - share, loss_generator=3 - i / steps,
                              loss_kd=1 / i, loss_forget=0.1 if atesc else 0.0, samples_per_s=100.0))
            if i % 5 == 0:
                w.emit(EvalEvent(step=i, student_acc_id=acc * i / steps, student_acc_ood=0.1))
                x = torch.rand(16, 3, 32, 32, generator=g)
                save_grid(x, run_dir / "samples" / f"step-{i:08d}.png")
                if atesc:
                    save_grid(x[:9], run_dir / "samples" / f"step-{i:08d}-fragile.png")
                    save_grid(x[9:], run_dir / "samples" / f"step-{i:08d}-robust.png")
        w.emit(StatusEvent(status="done", step=steps))


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # decodes the whole image
        assert im.format == "PNG"
        return im.size


def test_run_report_pngs(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    _fake_run(rd)
    files = run_report(rd)
    assert [f.name for f in files] == ["report.png", "samples_split.png"]
    assert _png_size(rd / "report.png") == (int(RUN_FIGSIZE[0] * DPI), int(RUN_FIGSIZE[1] * DPI))
    w, h = _png_size(rd / "samples_split.png")
    assert w == 600 and h == 3 * 300 + 40  # 3 chosen steps x (fragile, robust), 3 inches each at 100 dpi


def test_run_report_without_atesc_has_no_sample_split(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    _fake_run(rd, atesc=False)
    files = run_report(rd, tmp_path / "figs", sample_steps=[10])
    assert [f.name for f in files] == ["report.png"]
    assert _png_size(files[0]) == (1200, 800)


def test_choose_steps() -> None:
    assert choose_steps([], None) == []
    assert choose_steps([5, 10], None) == [5, 10]
    assert choose_steps([5, 10, 15, 20, 25], None) == [5, 15, 25]
    assert choose_steps([5, 10, 15, 20, 25], [9, 24, 26]) == [10, 25]


def test_suite_report_bars_and_curves(tmp_path: Path) -> None:
    suite = Suite(name="t", teachers=["ntl-target"], atesc=[False, True], seeds=[0, 1])
    b = Bench(suite, tmp_path / "suite")
    for i, cell in enumerate(b.cells):
        _fake_run(b.run_dir(cell), atesc=cell.atesc, acc=0.3 + 0.1 * i)
    write_results(b.suite_dir, suite, b.results())
    files = suite_report(b.suite_dir)
    assert [f.name for f in files] == ["suite_bars.png", "suite_curves.png"]
    assert _png_size(files[0]) == (600, 450)
    assert _png_size(files[1]) == (900, 500)
    everything = report(b.suite_dir)  # the suite figures plus one report per cell
    assert sum(f.name == "report.png" for f in everything) == 4


def test_report_rejects_other_directories(tmp_path: Path) -> None:
    from core.errors import BadInput

    with pytest.raises(BadInput, match="neither a run directory"):
        report(tmp_path)


def test_auroc_and_ood_share() -> None:
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert auroc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5
    assert auroc(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0])) == 0.75

    steps, share = ood_share_curve([1.0, 2.0, 3.0], [1.0, 0.0, 0.5], window=2)
    assert steps == [1, 2, 3] and share == [1.0, 0.5, 0.25]


def test_report_and_bench_commands(tmp_path: Path) -> None:
    """The Typer commands (registered on the main app by importing atesc_tui.cmd_bench)."""
    import json

    from typer.testing import CliRunner

    from atesc_tui.cmd_bench import app

    rd = tmp_path / "run"
    _fake_run(rd)
    res = CliRunner().invoke(app, ["report", str(rd), "--json", "--steps", "5,20"])
    assert res.exit_code == 0, res.output
    files = json.loads(res.output.strip().splitlines()[-1])["files"]
    assert [Path(f).name for f in files] == ["report.png", "samples_split.png"]
    assert _png_size(rd / "samples_split.png") == (600, 2 * 300 + 40)
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2
    suite = tmp_path / "s.toml"
    suite.write_text('[suite]\nname = "t"\nbase = "b.toml"\nteachers = ["sl", "cuti"]\nseeds = [0, 1]\n')
    (tmp_path / "b.toml").write_text('[run]\nname = "x"\n')
    res = CliRunner().invoke(app, ["bench", str(suite), "--dry-run", "--json", "--only", "cuti-*-s1",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.strip().splitlines()]
    assert [(r["id"], r["state"]) for r in rows] == [("cuti-dfq-base-s1", "fresh"), ("cuti-dfq-atesc-s1", "fresh")]
    res = CliRunner().invoke(app, ["bench", str(suite), "--only", "nothing-matches", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2


def test_bench_command_progress_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`atesc bench` with the rich progress bar: runs the cells (faked here), prints the table."""
    from typer.testing import CliRunner

    from atesc_tui.cmd_bench import app
    from core.experiments.bench import Bench

    def fake_run(self: Bench, cell, *, resume: bool) -> None:  # noqa: ANN001
        _fake_run(self.run_dir(cell), steps=10, atesc=cell.atesc, acc=0.6 if cell.atesc else 0.4)
        for step in range(1, 11):
            self.on_event(cell, TrainEvent(step=step, split_id_ratio=1, split_ood_ratio=0, loss_generator=1,
                                           loss_kd=1, loss_forget=0, samples_per_s=1))

    monkeypatch.setattr(Bench, "_run_inprocess", fake_run)
    suite = tmp_path / "s.toml"
    suite.write_text('[suite]\nname = "t"\nbase = "b.toml"\nteachers = ["ntl-target"]\nseeds = [0]\n'
                     'set = ["dfkd.iterations=10"]\n')
    (tmp_path / "b.toml").write_text('[run]\nname = "x"\n')
    res = CliRunner().invoke(app, ["bench", str(suite), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "done   ntl-target-dfq-atesc-s0" in res.output and "| ntl-target | dfq | – | +15.0 |" in res.output  # late-eval means 0.45 vs 0.30
    res = CliRunner().invoke(app, ["bench", str(suite), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0 and res.output.count("skip ") == 2
