"""Error types the user interfaces turn into one-line messages and exit codes."""

from __future__ import annotations

from pathlib import Path


class BadInput(ValueError):
    """Malformed user input (config, file, name). CLIs print it on one line and exit with code 2.

    ``where`` names the file or source (``presets/x.toml``, ``--set``, ``env ATESC_...``) and
    ``field`` the dotted config field or tensor name, when known.
    """

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.where = where
        self.field = field
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [p for p in (self.where, self.field) if p]
        prefix = ": ".join(parts)
        text = f"{prefix}: {self.message}" if prefix else self.message
        return " ".join(text.split())


class RunLocked(BadInput):
    """The run directory is owned by another live process."""


class NonFiniteLoss(RuntimeError):
    """A loss became NaN/Inf during training."""


def require_file(path: Path, expected: str) -> None:
    """One-line ``BadInput`` when ``path`` is missing or is a directory; ``expected`` names the file kind."""
    if not path.exists():
        raise BadInput("file not found", where=str(path))
    if path.is_dir():
        raise BadInput(f"is a directory, expected {expected}", where=str(path))
