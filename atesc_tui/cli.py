"""Entry point of ``atesc``. Bare ``atesc``/``atesc --help`` prints a static summary without
importing Typer, pydantic or torch, so help is instant; everything else goes to ``commands``."""

from __future__ import annotations

import sys

HELP = """\
Usage: atesc COMMAND [ARGS]...

  Data-free knowledge distillation from non-transferable (NTL) teachers, with
  ATEsc (Adversarial Trap Escaping). Run `atesc COMMAND --help` for details.

Commands:
  run       Train a student with DFKD (+ATEsc) from a preset, with live panels.
  resume    Continue a saved run exactly from its latest checkpoint.
  teacher   Train (or load from cache) and evaluate an SL or NTL teacher.
  eval      Evaluate a saved teacher or a run's student on a domain.
  runs      List run directories with status, step and accuracy.
  presets   List the built-in presets, or show one.
  validate  Check a preset (and --set overrides) without running anything.
  convert   Convert a trusted PyTorch .pt/.pth teacher to safetensors.
  bench     Run a benchmark suite grid (teacher x method x ATEsc x seed).
  report    Draw PNG figures for a run or a bench suite.
  diagnose  Trap diagnostics: AUROC of the robustness score on real ID vs OOD images.
  data      List datasets (present? verified?) or fetch one with checksums.

Exit codes: 0 done, 1 failure, 2 bad input, 130 interrupted (checkpoint saved).
Configuration: preset TOML < environment ATESC_SECTION__FIELD < --set section.field=value.
"""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args in ([], ["--help"], ["-h"]):
        sys.stdout.write(HELP)
        raise SystemExit(0)
    from core.threads import set_passive_wait

    set_passive_wait()  # before anything imports torch (libgomp reads it once, when loaded)
    from atesc_tui.commands import app

    app(args=args, prog_name="atesc")


if __name__ == "__main__":
    main()
