"""``atesc convert``: turn a trusted PyTorch ``.pt``/``.pth`` teacher into a safetensors file.

Registered on the shared Typer app by importing this module (``atesc_tui.commands`` does it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from atesc_tui.cli_common import app, user_errors


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="PyTorch .pt/.pth file holding a state dict (pickle-based)")],
    dst: Annotated[Path, typer.Argument(help="Output teacher file (.safetensors)")],
    trust: Annotated[bool, typer.Option("--trust", help="Required: I trust this file's origin (it is unpickled, "
                                        "with torch.load(weights_only=True))")] = False,
    arch: Annotated[str, typer.Option("--arch", help="Teacher model name in the model registry")] = "cnn",
    width: Annotated[Optional[int], typer.Option("--width", min=1, help="Base width (default: inferred from the file)")] = None,
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", min=1, help="Classes (default: from head.weight)")] = None,
    in_ch: Annotated[Optional[int], typer.Option("--in-ch", min=1, help="Input channels (default: from the first conv)")] = None,
    kind: Annotated[str, typer.Option("--kind", help="Teacher kind recorded in the file (a teacher.kind value) "
                                      "or unknown")] = "unknown",
    force: Annotated[bool, typer.Option("--force", help="Overwrite DST if it exists")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object")] = False,
) -> None:
    """Convert a trusted PyTorch .pt/.pth teacher to safetensors (atesc never unpickles otherwise)."""
    with user_errors():
        from core.errors import BadInput

        from core.registry import plugin_names

        known = [*plugin_names("core.teachers.kinds"), "unknown"]
        if kind not in known:
            raise BadInput(f"unknown teacher kind {kind!r} ({', '.join(known)})", field="--kind")
        from core.teachers.convert import convert_teacher

        info = convert_teacher(src, dst, trust=trust, arch=arch, width=width, num_classes=num_classes,
                               in_ch=in_ch, kind=kind, force=force)
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
        else:
            sys.stdout.write(f"wrote {info['output']}: {info['arch']} width {info['width']}, {info['num_classes']} "
                             f"classes, {info['tensors']} tensors (source sha256 {info['source_sha256'][:12]}); "
                             f"use it with --set teacher.path={info['output']}\n")
