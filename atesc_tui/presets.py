"""Where built-in presets live and how a preset argument (name or path) resolves to a file."""

from __future__ import annotations

from pathlib import Path

import core


def preset_dir() -> Path:
    """The repository's ``presets/`` folder (the package is installed editable, next to it)."""
    return Path(core.__file__).resolve().parents[1] / "presets"


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
    known = ", ".join(sorted(p.relative_to(preset_dir()).with_suffix("").as_posix() for p in preset_dir().rglob("*.toml")))
    raise BadInput(f"no such preset file or built-in preset (built-ins: {known})", where=name_or_path)
