"""Where the built-in presets live and how a preset argument (name or path) resolves to a file.

The one place that locates ``presets/``: the top-level folder of a source checkout (also what an
editable install sees), or its copy shipped as package data ``core/preset_files`` by a regular
``pip install .`` (``pyproject.toml`` maps the package ``core.preset_files`` to ``presets/``).
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def preset_dir() -> Path:
    """The folder holding the built-in ``*.toml`` presets (bench suites under ``bench/``)."""
    shipped = _HERE / "preset_files"
    return shipped if shipped.is_dir() else _HERE.parent / "presets"


def builtin_presets() -> list[Path]:
    """Run presets (not bench suites), sorted; empty if the folder cannot be read."""
    try:
        return sorted(preset_dir().glob("*.toml"))
    except OSError:
        return []


def preset_name(path: Path) -> str:
    """``quickstart`` for ``presets/quickstart.toml``, ``bench/offline`` for a suite."""
    return path.relative_to(preset_dir()).with_suffix("").as_posix()


def resolve_preset(name_or_path: str) -> Path:
    """A path that exists wins; otherwise ``NAME`` means ``presets/NAME.toml``."""
    from core.errors import BadInput

    path = Path(name_or_path)
    if path.exists():
        return path
    builtin = preset_dir() / f"{name_or_path}.toml"
    if builtin.is_file():
        return builtin
    if path.suffix == ".toml" or "/" in name_or_path:
        raise BadInput("file not found", where=name_or_path)
    known = ", ".join(sorted(preset_name(p) for p in preset_dir().rglob("*.toml")))
    raise BadInput(f"no such preset file or built-in preset (built-ins: {known})", where=name_or_path)
