"""The ``atesc`` commands (Typer). Heavy imports (torch, core.train) happen inside the commands."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

import atesc_tui.cmd_bench  # noqa: F401  (registers bench, report, diagnose on `app`)
import atesc_tui.cmd_convert  # noqa: F401  (registers convert on `app`)
import atesc_tui.cmd_data  # noqa: F401  (registers data list/fetch on `app`)
from atesc_tui.cli_common import EXIT_FAIL, EXIT_INTERRUPTED, DeviceOpt, JsonOpt, NprocOpt, SetOpt, app, err, out, user_errors
from core.presets import preset_dir, preset_name, resolve_preset

presets_app = typer.Typer(help="List the built-in presets, or show one.", invoke_without_command=True,
                          add_completion=False)
app.add_typer(presets_app, name="presets")


def _load(preset: str, sets: list[str] | None, device: str | None = None) -> Any:
    from core.config import load_config

    overrides = list(sets or [])
    if device:
        overrides.append(f"run.device={device}")
    return load_config(resolve_preset(preset), overrides)


def _json_sink(event: Any) -> None:
    sys.stdout.write(event.model_dump_json() + "\n")
    sys.stdout.flush()


def _train(cfg: Any, run_dir: Path, *, resume: bool, steps: int | None, as_json: bool) -> None:
    """Run or resume with panels or JSON lines; exit 130 with the resume command on a signal."""
    from core.errors import NonFiniteLoss
    from core.train import Interrupted, StopFlag, Trainer

    stop = StopFlag()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    quiet = int(os.environ.get("RANK", "0")) > 0  # rank 0 alone reports; the others only train
    if quiet:
        trainer = Trainer(cfg, run_dir)
        ctx: Any = _nullcontext()
    elif as_json:
        trainer = Trainer(cfg, run_dir, sinks=[_json_sink])
        ctx = _nullcontext()
    else:
        from atesc_tui.panels import LivePanels

        panels = LivePanels(cfg, run_dir, console=out)
        trainer = Trainer(cfg, run_dir, sinks=[panels.on_event], teacher_progress=panels.on_teacher_progress)
        ctx = panels
    try:
        with ctx, stop.installed():
            result = trainer.run(resume=resume, max_steps=steps, stop=stop)
    except Interrupted as exc:
        saved = f"checkpoint saved at {exc.checkpoint}; " if exc.checkpoint else ""
        nproc = f" --nproc {world}" if world > 1 else ""
        if not quiet:
            err.print(f"interrupted: {saved}continue with: atesc resume {run_dir}{nproc}", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:
        err.print(f"interrupted before training started (no checkpoint yet): {run_dir}", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        err.print(f"error: {exc.filename or run_dir}: No space left on device; free some space, then: "
                  f"atesc resume {run_dir}", markup=False)
        raise typer.Exit(EXIT_FAIL) from None
    except NonFiniteLoss as exc:
        err.print(f"error: {exc} (run.nan_policy={cfg.run.nan_policy}); last good checkpoint kept in {run_dir}",
                  markup=False)
        raise typer.Exit(EXIT_FAIL) from None
    if quiet:
        return
    if not as_json:
        from atesc_tui.panels import summary_table

        out.print(summary_table(run_dir))
    if result.status == "paused":
        err.print(f"paused at step {result.step}; continue with: atesc resume {run_dir}", markup=False)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@app.command()
def run(
    preset: Annotated[str, typer.Argument(help="Preset TOML file or built-in name (see `atesc presets`)")],
    sets: SetOpt = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default runs/<name>-<time>)")] = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Stop (paused) after N iterations")] = None,
    nproc: NprocOpt = 1,
) -> None:
    """Train a student with DFKD (+ATEsc) from a preset, showing live panels."""
    with user_errors():
        from core.errors import BadInput
        from core.train import default_run_dir, preflight

        cfg = _load(preset, sets, device)
        preflight(cfg)
        if run_dir is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise BadInput("give --run-dir when started by torchrun (every process must use the same one)",
                           where="atesc run")
        target = run_dir if run_dir is not None else default_run_dir(cfg)
        if nproc > 1:
            from core.distributed import check_parallel

            check_parallel(cfg, nproc)
            argv = ["run", preset, "--run-dir", str(target), *[a for s in sets or [] for a in ("--set", s)]]
            argv += (["--device", device] if device else []) + (["--json"] if as_json else [])
            argv += ["--steps", str(steps)] if steps else []
            _launch(argv, nproc)
        _train(cfg, target, resume=False, steps=steps, as_json=as_json)


def _launch(argv: list[str], nproc: int) -> None:
    from core.errors import BadInput
    from core.launch import run_workers

    if "RANK" in os.environ:
        raise BadInput("--nproc inside a process that torchrun already started", where="--nproc")
    raise typer.Exit(run_workers(argv, nproc))


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="Run directory to continue")],
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Run at most N more iterations")] = None,
    iterations: Annotated[Optional[int], typer.Option("--iterations", min=1, help="Extend the run to N iterations in total")] = None,
    as_json: JsonOpt = False,
    nproc: NprocOpt = 1,
) -> None:
    """Continue a saved run exactly from its latest checkpoint (with as many processes as it was started with)."""
    with user_errors():
        from core.train import prepare_resume

        cfg = prepare_resume(run_dir, world_size=int(os.environ.get("WORLD_SIZE", nproc)))
        if iterations is not None:
            cfg.dfkd.iterations = iterations
        if nproc > 1:
            argv = ["resume", str(run_dir)] + (["--steps", str(steps)] if steps else [])
            argv += (["--iterations", str(iterations)] if iterations else []) + (["--json"] if as_json else [])
            _launch(argv, nproc)
        _train(cfg, run_dir, resume=True, steps=steps, as_json=as_json)


@app.command()
def teacher(
    preset: Annotated[str, typer.Argument(help="Preset TOML file or built-in name")],
    sets: SetOpt = None,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the teacher's accuracies as one JSON object, no progress bar")] = False,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Also copy the teacher to this .safetensors file")] = None,
) -> None:
    """Train (or load from cache) an SL or NTL teacher and print its ID and OOD accuracy."""
    with user_errors():
        from core.teachers.train import get_teacher

        cfg = _load(preset, sets, device)
        if out_path is not None and out_path.suffix != ".safetensors":
            from core.errors import BadInput

            raise BadInput("teacher files must end in .safetensors", where=str(out_path), field="--out")
        if as_json:
            result = get_teacher(cfg)
        else:
            from atesc_tui.panels import teacher_progress

            with teacher_progress(out) as progress:
                result = get_teacher(cfg, progress=progress)
        path = getattr(result, "path", None)
        if out_path is not None:
            from core.teachers.files import save_teacher

            save_teacher(out_path, result.model, cfg, result.acc_id, result.acc_ood)
            path = out_path
        record = {
            "kind": cfg.teacher.kind, "arch": cfg.teacher.arch, "id_domain": cfg.data.id_domain,
            "ood_domain": cfg.data.ood_domain, "teacher_acc_id": result.acc_id, "teacher_acc_ood": result.acc_ood,
            "seconds": getattr(result, "seconds", None), "path": str(path) if path else None,
        }
        if as_json:
            sys.stdout.write(json.dumps(record) + "\n")
        else:
            from atesc_tui.panels import teacher_table

            out.print(teacher_table(record))


@app.command("eval")
def eval_cmd(
    domain: Annotated[list[str], typer.Option("--domain", "-d", help="Domain to evaluate on (repeatable)")],
    teacher_file: Annotated[Optional[Path], typer.Option("--teacher", help="Teacher .safetensors file")] = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run", help="Run directory: evaluate its latest student")] = None,
    root: Annotated[Optional[Path], typer.Option("--root", help="Data directory (default: data.root)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Domain split seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per domain instead of a table")] = False,
) -> None:
    """Evaluate a saved teacher (--teacher) or a run's student (--run) on one or more domains."""
    with user_errors():
        from core.errors import BadInput
        from core.experiments.evaluate import evaluate_on_domains

        if (teacher_file is None) == (run_dir is None):
            raise BadInput("give exactly one of --teacher FILE or --run RUN_DIR", where="atesc eval")
        rows = evaluate_on_domains(domain, teacher_file=teacher_file, run_dir=run_dir, root=root, seed=seed)
        if as_json:
            for row in rows:
                sys.stdout.write(json.dumps(row) + "\n")
        else:
            from rich.table import Table

            table = Table(title=str(teacher_file or run_dir))
            for col in ("model", "domain", "accuracy", "samples"):
                table.add_column(col)
            for row in rows:
                table.add_row(row["model"], row["domain"], f"{row['accuracy']:.4f}", str(row["samples"]))
            out.print(table)


@app.command()
def runs(
    root: Annotated[Path, typer.Argument(help="Folder holding run directories")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run")] = False,
) -> None:
    """List run directories with status, step and best ID accuracy."""
    with user_errors():
        from core.errors import BadInput
        from core.rundir.summary import list_runs

        if not root.is_dir():
            raise BadInput("no such directory (runs are created by `atesc run`)" if not root.exists()
                           else "not a directory", where=str(root))
        summaries = list_runs(root)
        if as_json:
            for s in summaries:
                sys.stdout.write(s.model_dump_json() + "\n")
            return
        from atesc_tui.panels import runs_table

        out.print(runs_table(summaries, root))


@app.command()
def validate(
    preset: Annotated[str, typer.Argument(help="Preset TOML file or built-in name")],
    sets: SetOpt = None,
) -> None:
    """Check a preset (with environment and --set overrides), or every cell of a bench suite, without running."""
    with user_errors():
        from core.config import read_toml
        from core.train import preflight

        path = resolve_preset(preset)
        if "suite" in read_toml(path):
            from core.experiments.bench import Bench

            cells = Bench.from_file(path).configs()
            for cfg in cells:
                preflight(cfg)
            out.print(f"ok: {path} (bench suite, {len(cells)} cells)")
            return
        cfg = _load(preset, sets)
        preflight(cfg)
        out.print(f"ok: {resolve_preset(preset)} ({cfg.teacher.kind} teacher, {cfg.dfkd.method}, "
                  f"ATEsc {'on' if cfg.atesc.enabled else 'off'}, {cfg.dfkd.iterations} iterations)")


@presets_app.callback()
def presets_list(ctx: typer.Context) -> None:
    """List the built-in presets."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    table = Table(title=f"built-in presets ({preset_dir()})")
    table.add_column("name")
    table.add_column("use with")
    table.add_column("needs")
    table.add_column("description")
    for path in sorted(preset_dir().rglob("*.toml")):
        name = preset_name(path)
        use = "atesc bench" if path.parent.name == "bench" else "atesc run"
        table.add_row(name, use, _needs(path), _first_comment(path))
    out.print(table)


# Models small enough for a CPU; anything else is paper scale.
_CPU_ARCHS = {"cnn", "cnn-student"}


def _needs(path: Path) -> str:
    """What a preset needs beyond the install: dataset files to fetch, a GPU for paper-scale models."""
    from core.config import read_toml
    from core.datasets import SOURCES

    try:
        tree = read_toml(path)
        if "suite" in tree:
            tree = read_toml((path.parent / tree["suite"].get("base", "")).resolve())
    except Exception:  # noqa: BLE001 - a broken preset still gets listed; `atesc validate` explains
        return "?"
    data, files, needs = tree.get("data", {}), [], []
    for key in ("id_domain", "ood_domain"):
        base = str(data.get(key, "")).removeprefix("patched:")
        base = {"cifar9": "cifar10", "stl9": "stl10"}.get(base, base)
        if base in SOURCES and base not in files:
            files.append(base)
    if files:
        needs.append("files: " + " ".join(files))
    archs = {tree.get("teacher", {}).get("arch", "cnn"), tree.get("student", {}).get("arch", "cnn-student")}
    if archs - _CPU_ARCHS:
        needs.append("GPU")
    return ", ".join(needs) or "nothing (offline, CPU)"


@presets_app.command("show")
def presets_show(name: Annotated[str, typer.Argument(help="Preset name, e.g. quickstart")]) -> None:
    """Print a built-in preset."""
    with user_errors():
        sys.stdout.write(resolve_preset(name).read_text(encoding="utf-8"))


def _first_comment(path: Path) -> str:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
