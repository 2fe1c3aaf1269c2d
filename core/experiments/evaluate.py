"""``atesc eval``: test accuracy of a saved teacher, or of a run's latest student, on named domains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import BadInput
from core.eval import accuracy


def evaluate_on_domains(
    domains: list[str],
    *,
    teacher_file: Path | None = None,
    run_dir: Path | None = None,
    root: Path | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Test accuracy of a saved teacher, or of a run's latest student, on each named domain."""
    from core.config import load_config
    from core.data import load_domain

    if (teacher_file is None) == (run_dir is None):
        raise BadInput("give exactly one of a teacher file or a run directory")
    cfg = load_config(None, [])
    if teacher_file is not None:
        from core.teachers.files import load_teacher

        model, _ = load_teacher(teacher_file)
        label = f"teacher {teacher_file.name}"
    else:
        from core.rundir.checkpoint import load_latest_valid
        from core.models import create_model
        from core.rundir import CHECKPOINT_DIR
        from core.train import prepare_resume

        cfg = prepare_resume(run_dir)
        saved = load_latest_valid(run_dir / CHECKPOINT_DIR)
        model = create_model(cfg.student.arch, width=cfg.student.width)
        model.load_state_dict(saved.module_state("student"))
        label = f"student @ step {saved.step}"
    data_root = (root or cfg.data.root).expanduser()
    rows = []
    for name in domains:
        data = load_domain(name, data_root, seed=seed)
        rows.append({"model": label, "domain": name, "accuracy": accuracy(model, data.test_x, data.test_y, device="cpu"),
                     "samples": len(data.test_y)})
    return rows
