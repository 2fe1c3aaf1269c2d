"""``atesc-tui``: the interactive app, or ``--serve`` to serve it to a browser with textual-serve."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="atesc-tui", description="Configure, launch, watch, stop, resume and compare ATEsc runs.")
    p.add_argument("--runs-root", type=Path, default=Path("runs"), help="directory holding run directories (default: runs)")
    p.add_argument("--open", dest="open_run", type=Path, default=None, metavar="RUN_DIR", help="open this run's monitor at start")
    p.add_argument("--serve", action="store_true", help="serve the app to a web browser (textual-serve)")
    p.add_argument("--host", default="127.0.0.1", help="--serve: address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="--serve: port (default 8000)")
    return p.parse_args(argv)


def serve_command(args: argparse.Namespace) -> str:
    parts = [sys.executable, "-m", "atesc_tui.app_main", "--runs-root", str(args.runs_root.resolve())]
    if args.open_run is not None:
        parts += ["--open", str(args.open_run.resolve())]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        from textual_serve.server import Server

        Server(serve_command(args), host=args.host, port=args.port, title="atesc-tui").serve()
        return 0
    probe_terminal()
    from atesc_tui.app import AtescApp

    AtescApp(args.runs_root, open_run=args.open_run).run()
    return 0


def probe_terminal() -> None:
    """textual-image asks the terminal for its cell size and graphics protocols when imported; the
    answers must arrive before Textual owns the terminal, or they are read as key presses (a `?`
    in them opened the help). The app imports its other screens lazily, so import this first."""
    import textual_image.widget  # noqa: F401


if __name__ == "__main__":
    sys.exit(main())
