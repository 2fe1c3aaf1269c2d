"""Layers point one way and nothing imports in a circle.

``core`` (the library) never imports ``atesc_tui`` (the user interface); no package has an import
cycle, counting imports inside functions too (a lazy import is still a dependency), but not those
under ``if TYPE_CHECKING:``. ``pyproject.toml`` lists every package, so a regular (non-editable)
install ships all of them and the presets.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "atesc_tui")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the given top-level packages."""
    mods: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _known(name: str, mods: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (``core.x.Y`` -> ``core.x``)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (any import statement, at any depth)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"), str(path))]
        while stack:
            for node in ast.iter_child_nodes(stack.pop()):
                if _type_checking_block(node):
                    continue
                if isinstance(node, ast.Import):
                    targets.update(t for a in node.names if (t := _known(a.name, mods)))
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join(kept + ([node.module] if node.module else []))
                    for alias in node.names:  # `from pkg import submodule` depends on the submodule
                        sub = f"{base}.{alias.name}"
                        target = sub if sub in mods else _known(base, mods)
                        if target:
                            targets.add(target)
                stack.append(node)
        targets.discard(name)
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph(module_files(ROOT, PACKAGES)))
    assert cycles == [], f"import cycles: {cycles}"


def test_cycle_finder_sees_lazy_and_relative_cycles(tmp_path: Path) -> None:
    """The checker itself: a cycle through a function-level and a relative import is reported,
    one hidden under TYPE_CHECKING is not."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.e\n")
    (pkg / "e.py").write_text("import pkg.d\n")
    graph = import_graph(module_files(tmp_path, ("pkg",)))
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_core_has_no_ui_import_statement() -> None:
    """Static: no import of ``atesc_tui`` anywhere under ``core`` (lazy ones included)."""
    graph = import_graph(module_files(ROOT, PACKAGES))
    offenders = {m: sorted(t for t in targets if t.startswith("atesc_tui")) for m, targets in graph.items()
                 if m.startswith("core") and any(t.startswith("atesc_tui") for t in targets)}
    assert offenders == {}


def test_importing_all_of_core_loads_no_ui_module() -> None:
    """Dynamic, in a fresh interpreter: import every ``core`` module, then look at ``sys.modules``."""
    code = (
        "import importlib, pkgutil, sys, core\n"
        "names = [m.name for m in pkgutil.walk_packages(core.__path__, 'core.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "print(len(names), sorted(m for m in sys.modules if m.split('.')[0] == 'atesc_tui'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    count, loaded = proc.stdout.split(" ", 1)
    assert int(count) >= len([m for m in module_files(ROOT, ("core",)) if m != "core"])
    assert loaded.strip() == "[]"


def test_pyproject_lists_every_package() -> None:
    """setuptools ships what ``packages`` lists: every folder with Python files, plus the presets."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    presets = {"core.preset_files", *("core.preset_files." + ".".join(d.relative_to(ROOT / "presets").parts)
                                       for d in (ROOT / "presets").rglob("*") if d.is_dir())}
    assert listed == folders | presets


@pytest.mark.slow
def test_regular_install_runs_the_quickstart_from_elsewhere(tmp_path: Path) -> None:
    """``pip install .`` (not editable) into a fresh venv, then ``atesc run quickstart`` from another
    folder: the presets come from the installed package data, the code from site-packages.

    The dependencies are this interpreter's (a ``.pth`` line), so no index is needed; the project
    itself is built from the checkout into a wheel and installed without them."""
    import site
    import venv

    wheels, env, elsewhere = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps-from-test.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next(wheels.glob("atesc_tui-*.whl"))
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr
    where = subprocess.run([str(py), "-c", "import core.presets as p; print(p.__file__); print(p.preset_dir())"],
                           capture_output=True, text=True, cwd=elsewhere, check=True).stdout.split()
    assert where[0].startswith(purelib) and where[1] == str(Path(purelib, "core", "preset_files"))
    run = subprocess.run([str(env / "bin" / "atesc"), "run", "quickstart", "--set", "dfkd.iterations=5",
                          "--set", "run.threads=1", "--json", "--run-dir", str(elsewhere / "run")],
                         capture_output=True, text=True, cwd=elsewhere, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    last = run.stdout.strip().splitlines()[-1]
    assert '"status":"done"' in last and '"step":5' in last
