"""Bench suites: grid expansion, resume (finished cells skipped, interrupted cells resumed), aggregation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from core.experiments.bench import (
    Bench,
    CellResult,
    Suite,
    aggregate,
    comparisons,
    expand,
    load_suite,
    mean_std,
    select,
    summarize_cell,
)
from core.errors import BadInput
from core.rundir.events import EVENTS_FILE, EvalEvent, EventWriter, StatusEvent, TrainEvent


def test_grid_expansion_counts_and_ids() -> None:
    suite = Suite(teachers=["sl", "ntl-target"], methods=["dfq", "cmi"], atesc=[False, True], seeds=[0, 1, 2])
    cells = expand(suite)
    assert len(cells) == 2 * 2 * 2 * 3
    assert len({c.id for c in cells}) == len(cells)
    c = cells[0]
    assert c.id == "sl-dfq-base-s0" and c.key == "sl-dfq-base"
    assert "teacher.kind=sl" in c.overrides and "atesc.enabled=false" in c.overrides and "run.seed=0" in c.overrides
    assert {c.key for c in cells} == {f"{t}-{m}-{a}" for t in ("sl", "ntl-target") for m in ("dfq", "cmi")
                                      for a in ("base", "atesc")}


def test_grid_expansion_variants_and_axes() -> None:
    suite = Suite(
        teachers=["ntl-target"], atesc=[True], seeds=[0, 1], set=["dfkd.iterations=7"],
        variants=[{"name": "a", "set": ["atesc.eps=0.1"]}, {"name": "b", "set": []}],
        axes={"fw": ["atesc.forget_weight=0.5", "atesc.forget_weight=1.0"], "split": [["atesc.split=adaptive"]]},
    )
    cells = expand(suite)
    assert len(cells) == 2 * 2 * 1 * 2
    keys = sorted({c.key for c in cells})
    assert keys == sorted([
        "ntl-target-dfq-atesc-a-fw=0.5-split=adaptive", "ntl-target-dfq-atesc-a-fw=1.0-split=adaptive",
        "ntl-target-dfq-atesc-b-fw=0.5-split=adaptive", "ntl-target-dfq-atesc-b-fw=1.0-split=adaptive",
    ])
    cell = next(c for c in cells if c.key.startswith("ntl-target-dfq-atesc-a-fw=1.0"))
    # the grid's own values first, then the suite's common overrides, the variant's and the axes' (last wins)
    assert cell.overrides[:4] == ["teacher.kind=ntl-target", "dfkd.method=dfq", "atesc.enabled=true", "run.seed=0"]
    assert cell.overrides[4:] == ["dfkd.iterations=7", "atesc.eps=0.1", "atesc.forget_weight=1.0", "atesc.split=adaptive"]
    assert [c.id for c in select(cells, "*-a-*s1")] == [c.id for c in cells if c.variant.startswith("a") and c.seed == 1]
    assert len(select(cells, "fw=0.5")) == 4


def test_variant_can_switch_atesc_off_and_is_compared_against() -> None:
    suite = Suite(teachers=["ntl-target"], atesc=[True], seeds=[0],
                  variants=[{"name": "off", "set": ["atesc.enabled=false"]}, {"name": "eps", "set": ["atesc.eps=0.1"]}])
    off, eps = expand(suite)
    assert off.id == "ntl-target-dfq-base-off-s0" and not off.atesc and off.overrides[-1] == "atesc.enabled=false"
    assert eps.id == "ntl-target-dfq-atesc-eps-s0" and eps.atesc
    rs = [CellResult(id=c.id, key=c.key, teacher=c.teacher, method=c.method, atesc=c.atesc, variant=c.variant,
                     seed=0, status="done", acc_id=a, acc_ood=0.1) for c, a in ((off, 0.3), (eps, 0.4))]
    (comp,) = comparisons(aggregate(rs))
    assert comp["variant"] == "eps" and comp["delta_id_points"] == pytest.approx(10.0)


def test_suite_file_errors(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('[suite]\nname = "x"\nteachers = ["nope"]\n')
    with pytest.raises(BadInput) as exc:
        load_suite(p)
    assert "suite.teachers" in exc.value.one_line()
    p.write_text('[suite]\nname = "x"\nbogus = 1\n')
    with pytest.raises(BadInput, match="unknown key"):
        load_suite(p)
    p.write_text('[data]\nid_domain = "mnist"\n')
    with pytest.raises(BadInput, match=r"\[suite\]"):
        load_suite(p)


def test_mean_std_is_sample_std() -> None:
    assert mean_std([]) == (None, None)
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([0.2, 0.4, 0.6])
    assert m == pytest.approx(0.4) and s == pytest.approx(0.2)  # ddof=1


def _result(key: str, seed: int, acc: float, on: bool, status: str = "done") -> CellResult:
    teacher, method = "ntl-target", "dfq"
    return CellResult(id=f"{key}-s{seed}", key=key, teacher=teacher, method=method, atesc=on, seed=seed,
                      status=status, acc_id=acc, acc_ood=acc / 2)


def test_aggregate_and_comparisons() -> None:
    rs = [_result("ntl-target-dfq-base", s, a, False) for s, a in ((0, 0.3), (1, 0.4), (2, 0.5))]
    rs += [_result("ntl-target-dfq-atesc", s, a, True) for s, a in ((0, 0.5), (1, 0.7))]
    rs += [_result("ntl-target-dfq-atesc", 2, 0.99, True, status="interrupted")]  # unfinished: ignored
    groups = {g.key: g for g in aggregate(rs)}
    base, on = groups["ntl-target-dfq-base"], groups["ntl-target-dfq-atesc"]
    assert base.n == 3 and base.acc_id_mean == pytest.approx(0.4) and base.acc_id_std == pytest.approx(0.1)
    assert base.acc_ood_mean == pytest.approx(0.2) and base.acc_ood_std == pytest.approx(0.05)
    assert on.n == 2 and on.seeds == [0, 1] and on.acc_id_mean == pytest.approx(0.6)
    assert on.acc_id_std == pytest.approx(math.sqrt(0.02))
    (comp,) = comparisons(list(groups.values()))
    assert comp["delta_id_points"] == pytest.approx(20.0)


def _fake_cell_run(run_dir: Path, accs: list[float], done: bool) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text("[dfkd]\nbatch_size = 8\n")
    with EventWriter(run_dir / EVENTS_FILE) as w:
        w.emit(EvalEvent(step=0, student_acc_id=0.1, student_acc_ood=0.1, teacher_acc_id=0.9, teacher_acc_ood=0.1))
        for i, a in enumerate(accs, start=1):
            w.emit(TrainEvent(step=i, split_id_ratio=0.5, split_ood_ratio=0.5, loss_generator=1, loss_kd=1,
                              loss_forget=0, samples_per_s=16.0))
            w.emit(EvalEvent(step=i, student_acc_id=a, student_acc_ood=a / 2))
        if done:
            w.emit(StatusEvent(status="done", step=len(accs)))


def test_summarize_uses_mean_of_last_evals(tmp_path: Path) -> None:
    suite = Suite(seeds=[0], atesc=[False])
    (cell,) = expand(suite)
    _fake_cell_run(tmp_path / "r", [0.2, 0.4, 0.6, 0.8], done=True)
    r = summarize_cell(cell, tmp_path / "r", last_evals=3)
    assert r.status == "done" and r.step == 4 and r.evals_used == 3
    assert r.acc_id == pytest.approx(0.6) and r.final_acc_id == pytest.approx(0.8)
    assert r.acc_ood == pytest.approx(0.3)
    assert r.teacher_acc_id == pytest.approx(0.9) and r.split_id_ratio == pytest.approx(0.5)
    assert r.s_per_iter == pytest.approx(0.5)  # batch 8 at 16 samples/s
    assert summarize_cell(cell, tmp_path / "missing", 3).status == "pending"


def test_resume_skips_finished_cells_and_restarts_unstarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base.toml"
    base.write_text('[run]\nname = "x"\n')
    suite_path = tmp_path / "suite.toml"
    suite_path.write_text('[suite]\nname = "t"\nbase = "base.toml"\nteachers = ["sl"]\natesc = [false, true]\n'
                          'seeds = [0, 1]\nlast_evals = 2\n')
    b = Bench.from_file(suite_path, tmp_path / "out")
    assert [c.id for c in b.cells] == ["sl-dfq-base-s0", "sl-dfq-base-s1", "sl-dfq-atesc-s0", "sl-dfq-atesc-s1"]
    _fake_cell_run(b.run_dir(b.cells[0]), [0.5, 0.7], done=True)  # finished
    _fake_cell_run(b.run_dir(b.cells[1]), [0.5], done=False)  # started, no checkpoint: restart
    assert b.state_of(b.cells[0]) == "done" and b.state_of(b.cells[1]) == "fresh"
    calls: list[tuple[str, bool]] = []

    def fake_run(self: Bench, cell, *, resume: bool) -> None:  # noqa: ANN001
        calls.append((cell.id, resume))
        assert not self.run_dir(cell).exists()  # the stale directory was cleared
        _fake_cell_run(self.run_dir(cell), [0.1, 0.3, 0.5], done=True)

    monkeypatch.setattr(Bench, "_run_inprocess", fake_run)
    states: list[tuple[str, str]] = []
    b.on_cell = lambda c, s: states.append((c.id, s))
    payload = b.run()
    assert calls == [("sl-dfq-base-s1", False), ("sl-dfq-atesc-s0", False), ("sl-dfq-atesc-s1", False)]
    assert states[0] == ("sl-dfq-base-s0", "skipped")
    groups = {g["key"]: g for g in payload["groups"]}
    assert groups["sl-dfq-base"]["n"] == 2
    assert groups["sl-dfq-base"]["acc_id_mean"] == pytest.approx((0.6 + 0.4) / 2)  # means of the last 2 evals
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.count("| sl | dfq | off |") == 1 and md.count("| sl | dfq | on |") == 1
    assert "| sl | dfq | – | -10.0 |" in md  # ATEsc 0.4 vs base 0.5
    assert json.loads((tmp_path / "out" / "results.json").read_text())["comparisons"][0]["delta_id_points"] == \
        pytest.approx(-10.0)
    calls.clear()
    b.run()  # everything finished: nothing runs again
    assert calls == []


def test_interrupted_cell_with_checkpoint_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base.toml"
    base.write_text('[run]\nname = "x"\n')
    b = Bench(Suite(base=str(base), teachers=["sl"], atesc=[False], seeds=[0]), tmp_path / "out")
    (cell,) = b.cells
    rd = b.run_dir(cell)
    _fake_cell_run(rd, [0.5], done=False)
    (rd / "checkpoints").mkdir()
    monkeypatch.setattr("core.rundir.checkpoint.latest_checkpoint", lambda d: d / "step-00000001.safetensors")
    assert b.state_of(cell) == "resume"
    seen: list[bool] = []

    def fake_run(self: Bench, c, *, resume: bool) -> None:  # noqa: ANN001
        seen.append(resume)
        assert self.run_dir(c).exists()  # kept for the resume
        with EventWriter(self.run_dir(c) / EVENTS_FILE) as w:
            w.emit(StatusEvent(status="done", step=1))

    monkeypatch.setattr(Bench, "_run_inprocess", fake_run)
    b.run()
    assert seen == [True]


@pytest.mark.timeout(300)
def test_tiny_suite_runs_for_real_and_resumes(tmp_path: Path, tiny_preset: Path) -> None:
    """Two tiny real cells in-process, then a rerun that skips both."""
    suite_path = tmp_path / "suite.toml"
    suite_path.write_text(f'[suite]\nname = "tiny"\nbase = "{tiny_preset.name}"\nteachers = ["ntl-target"]\n'
                          'atesc = [false, true]\nseeds = [0]\nlast_evals = 2\nset = ["dfkd.iterations=4"]\n')
    b = Bench.from_file(suite_path, tmp_path / "out")
    payload = b.run()
    cells = {c["id"]: c for c in payload["cells"]}
    assert all(c["status"] == "done" and c["step"] == 4 and c["evals_used"] == 2 for c in cells.values())
    assert cells["ntl-target-dfq-base-s0"]["split_id_ratio"] == 1.0
    assert 0 < cells["ntl-target-dfq-atesc-s0"]["split_id_ratio"] < 1
    states: list[str] = []
    b2 = Bench.from_file(suite_path, tmp_path / "out", on_cell=lambda c, s: states.append(s))
    b2.run()
    assert states == ["skipped", "skipped"]


def test_paired_comparison_and_gap_closed_on_hand_made_numbers() -> None:
    from core.experiments.bench import gap_closed, results_markdown

    def cell(teacher: str, on: bool, seed: int, acc: float) -> CellResult:
        key = f"{teacher}-dfq-{'atesc' if on else 'base'}"
        return CellResult(id=f"{key}-s{seed}", key=key, teacher=teacher, method="dfq", atesc=on, seed=seed,
                          status="done", acc_id=acc, acc_ood=0.1)

    # NTL base swings by seed, ATEsc adds 10, 5, 15, 10, 5 points: paired mean 9, t-interval [3.8, 14.2]
    base = [0.30, 0.50, 0.40, 0.20, 0.35]
    gains = [0.10, 0.05, 0.15, 0.10, 0.05]
    rs = [cell("ntl-target", False, s, a) for s, a in enumerate(base)]
    rs += [cell("ntl-target", True, s, a + g) for s, (a, g) in enumerate(zip(base, gains))]
    rs += [cell("sl", False, s, 0.95) for s in range(5)]
    comps = comparisons(aggregate(rs), rs)
    (c,) = comps
    paired = c["paired_id"]
    assert paired["n"] == 5 and paired["mean"] == pytest.approx(9.0)
    half = 2.7764451 * 4.18330 / 5**0.5
    assert paired["ci_low"] == pytest.approx(9.0 - half, abs=1e-3) and paired["ci_high"] == pytest.approx(9.0 + half, abs=1e-3)
    (g,) = gap_closed(aggregate(rs), comps)
    assert g["gap_points"] == pytest.approx(95 - 35) and g["closed"] == pytest.approx(9.0 / 60)
    md = results_markdown(Suite(teachers=["ntl-target", "sl"]), rs, aggregate(rs))
    assert "+9.0 [+3.8, +14.2] (n=5)" in md and "| ntl-target | dfq | 60.0 | +9.0 [+3.8, +14.2] | 15 % |" in md
