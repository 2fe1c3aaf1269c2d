"""Bad inputs through the real CLI: one line on stderr naming what and where, exit 2, no traceback,
no run directory created, nothing overwritten, and no pickle ever executed.

``CASES`` is the table; README_reliability.md counts its rows. Each case builds its inputs in a
fresh folder and returns the command line; the test snapshots that folder before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.rundir.events import read_events
from core.rundir.history import RunHistory
from core.rundir.summary import forget_cache, summarize_run
from tests.conftest import REPO, TINY_PRESET, atesc

MARKER_NAME = "PICKLE_WAS_EXECUTED"


# ---------------------------------------------------------------- hostile and broken files


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: proof that a loader executed the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


def write_evil_pickle(path: Path, marker: Path, *, torch_zip: bool = False) -> Path:
    obj = {"state_dict": {"head.weight": [0.0]}, "payload": _Payload(marker)}
    if torch_zip:
        import torch

        torch.save(obj, path)  # zip container with data.pkl inside, like a real .pt
    else:
        path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def teacher_tensors(width: int = 8) -> dict:
    from core.models import create_model

    return {k: v.contiguous() for k, v in create_model("cnn", num_classes=10, width=width).state_dict().items()}


def write_teacher(path: Path, tensors: dict | None = None, **meta: str) -> Path:
    from safetensors.torch import save

    metadata = {"format": "atesc-teacher/1", "arch": "cnn", "width": "8", "num_classes": "10", "in_ch": "3"}
    metadata.update(meta)
    path.write_bytes(save(tensors if tensors is not None else teacher_tensors(), metadata=metadata))
    return path


def _first_weight(tensors: dict) -> str:
    return next(k for k, v in tensors.items() if v.dim() == 4)


# ---------------------------------------------------------------- the table


@dataclass
class Ctx:
    dir: Path
    preset: Path
    run_dir: Path
    marker: Path
    finished: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], list[str]]
    needles: tuple[str, ...]
    where: str | None = None  # substring of the stderr line naming the source; default: a path under ctx.dir
    needs_run: bool = False
    skip_root: bool = False
    changes: tuple[str, ...] = ()  # files a refused command may append to (the run's own event log)


CASES: list[Case] = []


def case(id: str, *needles: str, **kw) -> Callable:  # noqa: ANN003
    def register(build: Callable[[Ctx], list[str]]) -> Callable[[Ctx], list[str]]:
        CASES.append(Case(id, build, needles, **kw))
        return build

    return register


def preset_with(ctx: Ctx, text: str | bytes, name: str = "bad.toml") -> Path:
    path = ctx.dir / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def run(ctx: Ctx, preset: Path | str, *extra: str) -> list[str]:
    return ["run", str(preset), "--run-dir", str(ctx.run_dir), *extra]


def with_teacher(ctx: Ctx, path: Path | str) -> list[str]:
    return run(ctx, ctx.preset, "--set", f"teacher.path={path}")


# -- preset files

case("toml-malformed", "malformed TOML")(lambda c: run(c, preset_with(c, "[dfkd\niterations = 3\n")))
case("toml-unknown-key", "dfkd.nope: unknown key")(
    lambda c: run(c, preset_with(c, TINY_PRESET.replace("[dfkd]\n", "[dfkd]\nnope = 1\n"))))
case("toml-unknown-section", "nosuch: unknown key")(lambda c: run(c, preset_with(c, TINY_PRESET + "\n[nosuch]\na = 1\n")))
case("toml-wrong-type", "dfkd.iterations", "many")(
    lambda c: run(c, preset_with(c, TINY_PRESET.replace("iterations = 6", 'iterations = "many"'))))
case("toml-section-not-a-table", "dfkd")(lambda c: run(c, preset_with(c, "dfkd = 3\n")))
case("toml-nan", "student.lr", "nan")(lambda c: run(c, preset_with(c, TINY_PRESET.replace("[student]\n", "[student]\nlr = nan\n"))))
case("toml-inf", "dfkd.temperature", "inf")(
    lambda c: run(c, preset_with(c, TINY_PRESET.replace("[dfkd]\n", "[dfkd]\ntemperature = inf\n"))))
case("toml-negative", "dfkd.batch_size", "-5")(
    lambda c: run(c, preset_with(c, TINY_PRESET.replace("batch_size = 16", "batch_size = -5"))))
case("toml-empty-file", "empty file")(lambda c: run(c, preset_with(c, b"")))
case("toml-whitespace-only", "empty file")(lambda c: run(c, preset_with(c, b"\n  \n\t\n")))
case("toml-non-utf8", "not UTF-8")(lambda c: run(c, preset_with(c, TINY_PRESET.encode() + b"# caf\xe9 \xff\xfe\n")))
case("toml-utf16", "not UTF-8")(lambda c: run(c, preset_with(c, TINY_PRESET.encode("utf-16"))))
case("toml-binary-garbage", "not UTF-8")(lambda c: run(c, preset_with(c, bytes(range(256)) * 4)))
case("toml-is-a-directory", "is a directory")(lambda c: run(c, (c.dir / "adir.toml").mkdir() or c.dir / "adir.toml"))
case("toml-missing", "not found")(lambda c: run(c, c.dir / "missing.toml"))


@case("toml-unreadable-chmod-000", "cannot read", "Permission denied", skip_root=True)
def _(c: Ctx) -> list[str]:
    path = preset_with(c, TINY_PRESET, "locked.toml")
    path.chmod(0)
    return run(c, path)


# root reads any mode-000 file; /proc/self/mem is unreadable even for root (EIO at offset 0)
case("toml-unreadable-io-error", "cannot read", "Input/output error", where="/proc/self/mem")(
    lambda c: run(c, "/proc/self/mem"))

# -- environment and --set

case("env-wrong-type", "dfkd.iterations", where="env ATESC_DFKD__ITERATIONS")(
    lambda c: c.env.update(ATESC_DFKD__ITERATIONS="lots") or run(c, c.preset))
case("env-unknown-key", "dfkd.nope: unknown key", where="env ATESC_DFKD__NOPE")(
    lambda c: c.env.update(ATESC_DFKD__NOPE="1") or run(c, c.preset))
case("env-nan", "generator.lr", where="env ATESC_GENERATOR__LR")(
    lambda c: c.env.update(ATESC_GENERATOR__LR="nan") or run(c, c.preset))
case("set-nan", "student.lr", where="--set")(lambda c: run(c, c.preset, "--set", "student.lr=nan"))
case("set-negative", "run.eval_every", where="--set")(lambda c: run(c, c.preset, "--set", "run.eval_every=-1"))
case("set-not-key-value", "expected section.field=value", where="--set")(lambda c: run(c, c.preset, "--set", "dfkd"))
case("set-wrong-type", "atesc.enabled", where="--set")(lambda c: run(c, c.preset, "--set", "atesc.enabled=[1, 2]"))

# -- teacher files


@case("teacher-pickle-pt", "atesc convert --trust")
def _(c: Ctx) -> list[str]:
    return with_teacher(c, write_evil_pickle(c.dir / "teacher.pt", c.marker))


@case("teacher-pickle-pth-in-toml", "atesc convert --trust")
def _(c: Ctx) -> list[str]:
    evil = write_evil_pickle(c.dir / "teacher.pth", c.marker, torch_zip=True)
    return run(c, preset_with(c, TINY_PRESET.replace("[teacher]\n", f'[teacher]\npath = "{evil}"\n')))


@case("teacher-pickle-renamed-safetensors", "pickle", "atesc convert --trust")
def _(c: Ctx) -> list[str]:
    return with_teacher(c, write_evil_pickle(c.dir / "teacher.safetensors", c.marker))


@case("teacher-torch-zip-renamed-safetensors", "pickle/zip", "atesc convert --trust")
def _(c: Ctx) -> list[str]:
    return with_teacher(c, write_evil_pickle(c.dir / "teacher.safetensors", c.marker, torch_zip=True))


@case("teacher-truncated", "truncated")
def _(c: Ctx) -> list[str]:
    good = write_teacher(c.dir / "good.safetensors").read_bytes()
    path = c.dir / "cut.safetensors"
    path.write_bytes(good[: len(good) * 2 // 3])
    return with_teacher(c, path)


@case("teacher-absurd-header-length", "header length")
def _(c: Ctx) -> list[str]:
    path = c.dir / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63 + 12345) + b'{"a": 1}' + bytes(64))
    return with_teacher(c, path)


@case("teacher-header-not-json", "header is not JSON")
def _(c: Ctx) -> list[str]:
    path = c.dir / "garbage.safetensors"
    path.write_bytes(struct.pack("<Q", 16) + b"\xff\xfe\x00not json\xc3\x28ab" + bytes(32))
    return with_teacher(c, path)


@case("teacher-empty-file", "truncated")
def _(c: Ctx) -> list[str]:
    path = c.dir / "empty.safetensors"
    path.write_bytes(b"")
    return with_teacher(c, path)


@case("teacher-is-a-directory", "is a directory")
def _(c: Ctx) -> list[str]:
    path = c.dir / "dir.safetensors"
    path.mkdir()
    return with_teacher(c, path)


@case("teacher-unreadable-io-error", "cannot read", where="/proc/self/mem")
def _(c: Ctx) -> list[str]:
    return with_teacher(c, "/proc/self/mem")


@case("teacher-wrong-shape", "does not match", "blocks")
def _(c: Ctx) -> list[str]:
    tensors = teacher_tensors()
    name = _first_weight(tensors)
    tensors[name] = tensors[name][:, :, :2, :2].contiguous()  # 3x3 kernels cut to 2x2
    return with_teacher(c, write_teacher(c.dir / "shape.safetensors", tensors))


@case("teacher-wrong-width", "does not match", "width 8")
def _(c: Ctx) -> list[str]:
    return with_teacher(c, write_teacher(c.dir / "wide.safetensors", teacher_tensors(width=16)))


@case("teacher-wrong-dtype", "dtype torch.int64")
def _(c: Ctx) -> list[str]:
    tensors = teacher_tensors()
    name = _first_weight(tensors)
    tensors[name] = tensors[name].long()
    return with_teacher(c, write_teacher(c.dir / "dtype.safetensors", tensors))


@case("teacher-missing-tensor", "missing tensor", "head.weight")
def _(c: Ctx) -> list[str]:
    tensors = teacher_tensors()
    del tensors["head.weight"]
    return with_teacher(c, write_teacher(c.dir / "missing.safetensors", tensors))


@case("teacher-nan-weights", "NaN/Inf", "head.weight")
def _(c: Ctx) -> list[str]:
    tensors = teacher_tensors()
    tensors["head.weight"][0, 0] = float("nan")
    return with_teacher(c, write_teacher(c.dir / "nan.safetensors", tensors))


@case("teacher-bad-metadata", "metadata width", "not a valid int")
def _(c: Ctx) -> list[str]:
    return with_teacher(c, write_teacher(c.dir / "meta.safetensors", width="eight"))


# -- atesc convert (the only door to a pickle, and only with --trust)


def convert(src: Path, dst: Path, *extra: str) -> list[str]:
    return ["convert", str(src), str(dst), *extra]


def cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return atesc(*argv, env=env)


case("convert-without-trust", "--trust", "arbitrary code")(
    lambda c: convert(write_evil_pickle(c.dir / "t.pt", c.marker), c.dir / "out.safetensors"))
case("convert-trusted-but-code", "weights_only=True", "io.open")(
    lambda c: convert(write_evil_pickle(c.dir / "t.pt", c.marker, torch_zip=True), c.dir / "out.safetensors", "--trust"))


@case("convert-pickled-module", "weights_only=True", "core.models.Classifier")
def _(c: Ctx) -> list[str]:
    import torch

    from core.models import create_model

    torch.save(create_model("cnn", width=8), c.dir / "module.pt")
    return convert(c.dir / "module.pt", c.dir / "out.safetensors", "--trust")


@case("convert-truncated-pt", "not a readable PyTorch checkpoint")
def _(c: Ctx) -> list[str]:
    import torch

    torch.save(teacher_tensors(), c.dir / "t.pt")
    data = (c.dir / "t.pt").read_bytes()
    (c.dir / "t.pt").write_bytes(data[: len(data) // 2])
    return convert(c.dir / "t.pt", c.dir / "out.safetensors", "--trust")


@case("convert-would-overwrite", "already exists", "--force")
def _(c: Ctx) -> list[str]:
    import torch

    torch.save(teacher_tensors(), c.dir / "t.pt")
    (c.dir / "out.safetensors").write_bytes(b"precious")
    return convert(c.dir / "t.pt", c.dir / "out.safetensors", "--trust")


@case("convert-wrong-width", "does not match", "blocks")
def _(c: Ctx) -> list[str]:
    import torch

    torch.save(teacher_tensors(), c.dir / "t.pt")
    return convert(c.dir / "t.pt", c.dir / "out.safetensors", "--trust", "--width", "16")


# -- resuming a run directory


def copy_run(c: Ctx) -> Path:
    assert c.finished is not None
    dst = c.dir / "run"
    shutil.copytree(c.finished, dst)
    return dst


def resume(path: Path, *extra: str) -> list[str]:
    return ["resume", str(path), *extra]


case("resume-not-a-directory", "run directory not found")(
    lambda c: resume(preset_with(c, "x = 1\n", "file.txt")))
def broken_config(c: Ctx, text: bytes | None = None, old: str = "", new: str = "") -> list[str]:
    p = copy_run(c)
    config = p / "config.toml"
    config.write_bytes(text if text is not None else config.read_bytes().replace(old.encode(), new.encode()))
    return resume(p, "--json")


case("resume-config-non-utf8", "cannot read", "utf-8", needs_run=True)(
    lambda c: broken_config(c, b"\xff\xfe[run]\n"))
case("resume-config-malformed", "malformed TOML", needs_run=True)(lambda c: broken_config(c, b"[run\n"))
case("resume-config-unknown-key", "run.nope", needs_run=True)(
    lambda c: broken_config(c, old="[run]\n", new="[run]\nnope = 1\n"))


@case("resume-checkpoint-wrong-shape", "does not fit the model", "student.", needs_run=True,
      changes=("events.jsonl", "teacher.json"))
def _(c: Ctx) -> list[str]:
    p = copy_run(c)
    cfg = (p / "config.toml").read_text()
    assert "[student]\n" in cfg
    (p / "config.toml").write_text(cfg.replace('arch = "cnn-student"\nwidth = 8', 'arch = "cnn-student"\nwidth = 12'))
    assert (p / "config.toml").read_text() != cfg
    return resume(p, "--json")


@case("resume-checkpoints-truncated", "truncated", "step-00000006", needs_run=True,
      changes=("events.jsonl", "teacher.json"))
def _(c: Ctx) -> list[str]:
    p = copy_run(c)
    for f in sorted((p / "checkpoints").glob("step-*.safetensors")):
        data = f.read_bytes()
        f.write_bytes(data[: len(data) * 2 // 3])  # header intact, tensor data cut off
    return resume(p, "--json")


# ---------------------------------------------------------------- runner


def _snapshot(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            try:
                out[rel] = f"{p.stat().st_mtime_ns}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
            except PermissionError:
                out[rel] = f"{p.stat().st_mtime_ns}:unreadable"
    return out


@pytest.fixture(scope="module")
def finished_run(reference: tuple[Path, Path]) -> Path:
    return reference[1]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_exit_2_one_line_nothing_written(c: Case, tmp_path: Path, data_root: Path, request) -> None:  # noqa: ANN001
    if c.skip_root and os.geteuid() == 0:
        pytest.skip("root reads mode-000 files; the /proc/self/mem case covers unreadable files")
    work = tmp_path / "in"
    work.mkdir()
    preset = work / "tiny.toml"
    preset.write_text(TINY_PRESET)
    ctx = Ctx(dir=work, preset=preset, run_dir=tmp_path / "never-created", marker=tmp_path / MARKER_NAME)
    if c.needs_run:
        ctx.finished = request.getfixturevalue("finished_run")
    argv = c.build(ctx)
    before = _snapshot(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATESC_FAULT_")}
    env.update(ctx.env)
    proc = cli(*argv, env=env)
    try:
        assert proc.returncode == 2, f"rc {proc.returncode}: {proc.stderr}"
        assert "Traceback" not in proc.stderr + proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        for needle in c.needles:
            assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
        assert (c.where or str(work)) in lines[0], f"the message does not say where: {lines[0]!r}"
        assert not ctx.run_dir.exists(), "a run directory was created"
        assert not ctx.marker.exists(), "the pickle was executed"
        after = _snapshot(work)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        allowed = {f"run/{name}" for name in c.changes}
        assert changed <= allowed, f"files changed: {sorted(changed - allowed)}"
    finally:
        for p in work.rglob("*"):
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)


def test_bad_input_table_size() -> None:
    assert len(CASES) >= 20


# ---------------------------------------------------------------- garbage in a watched run


GARBAGE = [
    b"not json at all\n",
    b"\xff\xfe\xfd non-utf8 \x80\x81\n",
    b'{"v": 1, "kind": "train", "step": "three"}\n',
    b'{"v": 1, "kind": "no-such-kind", "step": 1}\n',
    b"[1, 2, 3]\n",
    b"\x00" * 64 + b"\n",
    b'{"v": 1, "kind": "eval", "step": 1, "student_acc_id": NaN}\n',
    b"x" * 200_000 + b"\n",
]


def test_events_with_garbage_lines_runs_table_summary_and_resume_survive(finished_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = root / "garbled"
    shutil.copytree(finished_run, run_dir)
    events_file = run_dir / "events.jsonl"
    good, _ = read_events(events_file)
    with open(events_file, "ab") as fh:
        for line in GARBAGE:
            fh.write(line)
        fh.write(b'{"v": 1, "kind": "status", "sta')  # torn last line
    # a sibling whose events file is binary noise and whose config is not TOML
    noise = root / "noise"
    noise.mkdir()
    (noise / "events.jsonl").write_bytes(bytes(range(256)) * 8)
    (noise / "config.toml").write_bytes(b"\xff\xfe[[[")
    # and one whose events "file" is a directory
    odd = root / "odd"
    (odd / "events.jsonl").mkdir(parents=True)
    (odd / "config.toml").write_text("[run]\n")

    forget_cache()
    s = summarize_run(run_dir)
    assert s.status == "done" and s.step == 6 and s.skipped >= len(GARBAGE) - 1
    hist, skipped = RunHistory.load(run_dir)
    assert hist.status == "done" and skipped >= len(GARBAGE) - 1
    assert summarize_run(noise).status in ("new", "stale")
    assert summarize_run(odd).status in ("new", "stale")

    table = atesc("runs", str(root), env={**os.environ, "COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    assert "Traceback" not in table.stderr and "garbled" in table.stdout
    rows = atesc("runs", str(root), "--json")
    assert rows.returncode == 0, rows.stderr
    names = {json.loads(line)["name"]: json.loads(line) for line in rows.stdout.splitlines()}
    assert set(names) == {"garbled", "noise", "odd"} and names["garbled"]["status"] == "done"

    # The run itself continues: new events land on their own lines after the garbage.
    more = atesc("resume", str(run_dir), "--iterations", "7", "--json")
    assert more.returncode == 0, more.stderr
    events, _ = read_events(events_file)
    assert len(events) > len(good) and events[-1].kind == "status" and events[-1].status == "done"
    assert any(e.kind == "train" and e.step == 7 for e in events)
    forget_cache()
    assert summarize_run(run_dir).step == 7


def test_pickle_payload_really_runs_when_unpickled(tmp_path: Path) -> None:
    """Guard for the table: the crafted pickle does create the marker when (unsafely) loaded."""
    marker = tmp_path / "m"
    path = write_evil_pickle(tmp_path / "x.pt", marker)
    code = f"import pickle, sys; sys.path.insert(0, {str(REPO)!r}); pickle.loads(open({str(path)!r}, 'rb').read())"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False, capture_output=True)
    assert marker.exists()


# ---------------------------------------------------------------- atesc convert, the trusted way


def test_convert_trusted_state_dict_then_use_it_as_teacher(tmp_path: Path, data_root: Path) -> None:
    """A DataParallel-style nested .pt converts (width inferred) and the result passes preflight."""
    import torch

    from core.teachers.files import load_teacher

    tensors = teacher_tensors(width=8)
    src = tmp_path / "teacher.pt"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in tensors.items()}}, src)
    dst = tmp_path / "teacher.safetensors"
    proc = cli("convert", str(src), str(dst), "--trust", "--kind", "ntl-target", "--json", env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["arch"], info["width"], info["num_classes"], info["in_ch"]) == ("cnn", 8, 10, 3)
    assert info["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    model, meta = load_teacher(dst)
    assert meta["kind"] == "ntl-target" and meta["converted_from"] == "teacher.pt"
    for k, v in model.state_dict().items():
        assert torch.equal(v, tensors[k])
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY_PRESET)
    ok = atesc("validate", str(preset), "--set", f"teacher.path={dst}")
    assert ok.returncode == 0, ok.stderr
    # --force replaces; without it the converted file is kept (covered in the table)
    again = cli("convert", str(src), str(dst), "--trust", "--force", env=dict(os.environ))
    assert again.returncode == 0 and "wrote" in again.stdout and len(again.stdout.splitlines()) == 1
    assert not list(tmp_path.glob(".teacher.safetensors.*"))  # no temp file left behind


def test_convert_in_process_refuses_before_reading(tmp_path: Path) -> None:
    from core.teachers.convert import convert_teacher
    from core.errors import BadInput

    marker = tmp_path / MARKER_NAME
    src = write_evil_pickle(tmp_path / "t.pt", marker)
    with pytest.raises(BadInput, match="--trust"):
        convert_teacher(src, tmp_path / "o.safetensors", trust=False)
    with pytest.raises(BadInput, match="weights_only"):
        convert_teacher(src, tmp_path / "o.safetensors", trust=True)
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()


def test_convert_is_an_atesc_command() -> None:
    proc = atesc("convert", "--help")
    assert proc.returncode == 0 and "--trust" in proc.stdout
