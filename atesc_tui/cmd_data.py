"""``atesc data list`` and ``atesc data fetch NAME`` (registered on the main Typer app)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from atesc_tui.cli_common import app, out, user_errors

data_app = typer.Typer(help="Datasets: list what is present and verified, fetch a release.", no_args_is_help=True,
                       add_completion=False)
app.add_typer(data_app, name="data")

RootOpt = Annotated[Optional[Path], typer.Option("--root", help="Data directory (default: data.root)")]


def _root(root: Path | None) -> Path:
    if root is not None:
        return root.expanduser()
    from core.config import load_config

    return load_config().data.root.expanduser()


def _rows(root: Path) -> list[dict[str, Any]]:
    from core.data import DOMAINS, domain_names
    from core.datasets import SOURCES, check

    rows: list[dict[str, Any]] = []
    statuses = {name: check(root, src) for name, src in SOURCES.items()}
    for name in domain_names():
        spec = DOMAINS.get(name.removeprefix("patched:"))
        base = name.removeprefix("patched:")
        row: dict[str, Any] = {"domain": name, "classes": spec.num_classes}
        if spec.offline:
            row.update(kind="offline", location="installed packages", state="available", detail="")
        else:
            source = base if base in statuses else {"cifar9": "cifar10", "stl9": "stl10"}.get(base, base)
            st = statuses[source]
            derived = f"derived from {source}; " if source != base else ""
            row.update(kind="files", location=st.location, state=st.state, detail=derived + st.detail)
        rows.append(row)
    return rows


@data_app.command("list")
def data_list(root: RootOpt = None, as_json: Annotated[bool, typer.Option("--json", help="One JSON object per domain")] = False) -> None:
    """Every domain: offline ones, and file-backed ones with where they go and whether they are verified."""
    with user_errors():
        rows = _rows(_root(root))
        if as_json:
            for row in rows:
                sys.stdout.write(json.dumps(row) + "\n")
            return
        from rich.table import Table

        table = Table(title=f"data domains (root {_root(root)})")
        for col in ("domain", "classes", "kind", "state", "expected at", "note"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(r["domain"], str(r["classes"]), r["kind"], r["state"], r["location"], r["detail"])
        out.print(table)


@data_app.command("fetch")
def data_fetch(name: Annotated[str, typer.Argument(help="mnist-full | usps | svhn | cifar10 | stl10")], root: RootOpt = None) -> None:
    """Download a dataset from its official address, verify its checksum, then install it."""
    with user_errors():
        from core.datasets import fetch

        target = _root(root)
        status = fetch(name, target, log=lambda line: out.print(line, markup=False))
        if status.state != "verified":
            from core.errors import BadInput

            raise BadInput(f"installed but not verified: {status.detail}", where=status.location)
        out.print(f"ok: {name} verified under {status.location}", markup=False)
