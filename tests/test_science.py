"""Science checks on the default offline pair (mnist -> patched:mnist). Slow: real teachers and runs.

CI runs them in a separate step (``pytest -m slow``). Each asserts only a claim the measurements in
``bench/results/`` support; see bench/results/README.md for the numbers and the commands.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from tests.conftest import REPO

pytestmark = pytest.mark.slow

QUICKSTART = REPO / "presets" / "quickstart.toml"
# The offline bench suite's cell settings (presets/bench/offline.toml), 1 seed.
SUITE_SET = [
    "data.eval_samples=500",
    "teacher.beta=10.0",
    "run.threads=2",
]


@pytest.mark.timeout(600)
def test_score_separates_real_id_from_ood_for_ntl_target_teacher(data_root: Path) -> None:
    """The default ATEsc score on REAL test images, seed-0 teachers: the target-specified NTL teacher is
    more fragile on ID than on OOD (measured AUROC 0.999); the SL teacher shows no separation (0.40).

    Measured on other teacher seeds: 0.94 (seed 2) but 0.37 (seed 1): the premise is a property of
    the teacher instance (bench/results/auroc.md), so this pins seed 0 rather than claiming it for all.
    """
    from core.experiments.diagnostics import score_auroc

    # The margin score (the quickstart now orients its feature split with rel-margin, which does not
    # separate REAL images: AUROC 0.49 for this teacher; bench/results/README.md section 0.2)
    ntl = score_auroc(load_config(QUICKSTART, [*SUITE_SET, "atesc.score=margin", "teacher.kind=ntl-target"]),
                      samples=300)
    assert ntl.teacher_acc_id > 0.85 and ntl.teacher_acc_ood < 0.35  # it is a non-transferable teacher
    assert ntl.auroc >= 0.8, ntl
    sl = score_auroc(load_config(QUICKSTART, [*SUITE_SET, "atesc.score=margin", "teacher.kind=sl"]), samples=300)
    assert sl.auroc < 0.7, sl


@pytest.mark.timeout(2400)
def test_trap_at_convergence_and_atesc_escapes_it(tmp_path: Path, data_root: Path) -> None:
    """The trap and the escape on the default pair, seed 0, the quickstart's (= presets/converged.toml's)
    recipe. Measured (bench/results/README.md section 0, 5 paired seeds): SL-teacher student 0.89-0.96;
    NTL-target student 0.34-0.57 without ATEsc; ATEsc's paired gain +18.9 to +28.0 points on every seed.
    Margins: SL floor 0.80, trap >= 15 points, ATEsc gain >= 8 points (below the smallest paired gain)."""
    from core.experiments.bench import Bench, Suite

    suite = Suite(name="science", base=str(QUICKSTART), teachers=["sl", "ntl-target"], methods=["dfq"],
                  atesc=[False, True], seeds=[0], last_evals=3, set=["run.threads=2", "run.checkpoint_every=600"])
    payload = Bench(suite, tmp_path / "suite").run()
    acc = {(g["teacher"], g["atesc"]): g["acc_id_mean"] for g in payload["groups"]}
    assert acc[("sl", False)] >= 0.80, acc  # converged, far above chance (0.10)
    assert acc[("sl", False)] - acc[("ntl-target", False)] >= 0.15, acc  # the trap
    assert acc[("ntl-target", True)] - acc[("ntl-target", False)] >= 0.08, acc  # ATEsc escapes part of it
