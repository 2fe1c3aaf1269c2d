"""CLI surface: instant help without heavy imports, presets, validate, runs, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from atesc_tui.cli import HELP
from atesc_tui.commands import app
from tests.conftest import REPO, atesc


def test_help_imports_neither_torch_nor_typer() -> None:
    code = ("import sys; from atesc_tui.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "bad = [m for m in ('torch', 'typer', 'pydantic', 'core.config') if m in sys.modules]\n"
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: atesc")


def test_static_help_lists_every_command() -> None:
    names = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    listed = {line.split()[0] for line in HELP.split("Commands:")[1].split("\n\n")[0].strip().splitlines()}
    assert names <= listed, names - listed


def test_presets_list_and_show() -> None:
    proc = atesc("presets")
    assert proc.returncode == 0 and "quickstart" in proc.stdout
    shown = atesc("presets", "show", "quickstart")
    assert shown.returncode == 0
    assert shown.stdout == (REPO / "presets" / "quickstart.toml").read_text()
    missing = atesc("presets", "show", "nope")
    assert missing.returncode == 2 and "built-ins:" in missing.stderr


def test_every_builtin_preset_validates(data_root: Path) -> None:
    presets = sorted((REPO / "presets").rglob("*.toml"))
    assert presets
    for preset in presets:
        proc = atesc("validate", str(preset))
        assert proc.returncode == 0, f"{preset}: {proc.stderr}"
        assert proc.stdout.startswith("ok:")
        assert ("bench suite" in proc.stdout) == (preset.parent.name == "bench")


def test_validate_reports_field_and_source(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dfkd]\niterations = 0\n")
    proc = atesc("validate", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: {bad}: dfkd.iterations:")
    proc = atesc("validate", "quickstart", "--set", "atesc.split=median")
    assert proc.returncode == 2 and "--set: atesc.split" in proc.stderr


def test_runs_lists_nothing_in_an_empty_folder(tmp_path: Path) -> None:
    proc = atesc("runs", str(tmp_path), "--json")
    assert proc.returncode == 0 and proc.stdout == ""


def test_runs_of_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    proc = atesc("runs", str(tmp_path / "nope"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such directory (runs are created by `atesc run`)"


def test_json_option_says_what_each_command_prints() -> None:
    def json_help(*cmd: str) -> str:
        text = " ".join(atesc(*cmd, "--help", env={**os.environ, "COLUMNS": "400"}).stdout.split())
        return text[text.index("--json"):][:80]

    assert "events as JSON lines" in json_help("run")
    assert "One JSON object per domain" in json_help("eval")
    assert "accuracies as one JSON object" in json_help("teacher")


def test_eval_a_saved_teacher_and_a_run_student(tmp_path: Path, data_root: Path, tiny_preset: Path) -> None:
    teacher = tmp_path / "t.safetensors"
    proc = atesc("teacher", str(tiny_preset), "--out", str(teacher), "--json")
    assert proc.returncode == 0, proc.stderr
    record = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    rows = atesc("eval", "--teacher", str(teacher), "-d", "mnist", "-d", "patched:mnist", "--json")
    assert rows.returncode == 0, rows.stderr
    accs = [__import__("json").loads(line) for line in rows.stdout.splitlines()]
    assert [r["domain"] for r in accs] == ["mnist", "patched:mnist"]
    # Same teacher, same test sets: eval reproduces what `atesc teacher` measured.
    assert abs(accs[0]["accuracy"] - record["teacher_acc_id"]) < 1e-6
    assert abs(accs[1]["accuracy"] - record["teacher_acc_ood"]) < 1e-6
    for args, needle in ((["-d", "mnist"], "exactly one of"),
                         (["--teacher", str(teacher), "-d", "nowhere"], "unknown data domain 'nowhere'"),
                         (["--run", str(tmp_path / "missing"), "-d", "mnist"], "run directory not found"),
                         (["--teacher", str(tmp_path), "-d", "mnist"], "is a directory")):
        bad = atesc("eval", *args)
        assert bad.returncode == 2 and needle in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
