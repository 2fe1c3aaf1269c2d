"""What every ``atesc`` command module shares: the Typer app they register on, the consoles, the
common options, the exit codes and the mapping of exceptions to one-line errors.

Command modules (``commands``, ``cmd_bench``, ``cmd_convert``) import this module and register on
``app``; ``commands`` imports the others so that importing it yields the complete CLI.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="atesc",
    help="Data-free knowledge distillation from non-transferable teachers, with ATEsc.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a field: section.field=value (repeatable)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print events as JSON lines instead of panels")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda (overrides run.device)")]
NprocOpt = Annotated[int, typer.Option("--nproc", min=1, max=1024,
                                       help="Data-parallel processes (DDP: gloo on CPU, NCCL with one GPU each)")]


@contextmanager
def user_errors() -> Iterator[None]:
    """Map exceptions to one-line messages and the documented exit codes (never a traceback)."""
    from core.errors import BadInput

    try:
        yield
    except BadInput as exc:
        err.print(f"error: {exc.one_line()}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"error: {where}{exc.strerror or exc}", markup=False)
        raise typer.Exit(EXIT_FAIL) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        if os.environ.get("ATESC_DEBUG"):
            traceback.print_exc()
        err.print(f"error: {type(exc).__name__}: {exc}", markup=False)
        raise typer.Exit(EXIT_FAIL) from None
