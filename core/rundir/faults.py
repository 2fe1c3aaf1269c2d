"""Fault-injection points for reliability tests, driven by environment variables.

Tests set these variables for a subprocess run (``atesc run``/``resume``) to make it fail at an
exact place, then check that nothing was lost. When no ``ATESC_FAULT_*`` variable is set,
``ACTIVE`` is False and every call site skips the hooks behind ``if faults.ACTIVE:``.

Variables (the ``ATESC_FAULT_`` prefix never contains ``__``, so they cannot be mistaken for
``ATESC_SECTION__FIELD`` config overrides):

``ATESC_FAULT_KILL_AT=POINT:STEP``
    SIGKILL this process at ``POINT`` when the trainer is at ``STEP``. Points:
    ``mid_step`` (after the generator update of step STEP, before its student updates),
    ``eval`` (evaluation at STEP computed, nothing written yet), ``checkpoint`` (just after the
    checkpoint of STEP is on disk), ``before_rename`` (the checkpoint of STEP is a complete,
    fsynced temporary file that has not been renamed yet).
``ATESC_FAULT_KILL_BEFORE_RENAME=STEP``
    Same as ``ATESC_FAULT_KILL_AT=before_rename:STEP`` (``1`` without a step number: the first
    checkpoint written).
``ATESC_FAULT_ENOSPC=TARGET[:STEP]``
    Raise ``OSError(ENOSPC)`` (no file name, like a real failing ``write``) when writing the
    checkpoint of STEP (``checkpoint``) or the first event at or after STEP (``events``; half of
    the line is written first, like a real partial write). Once triggered the disk stays "full"
    for that target until the process ends.
``ATESC_FAULT_NAN_AT_STEP=STEP``
    Make a loss of step STEP non-finite: ``ATESC_FAULT_NAN_LOSS=student`` (default) or
    ``generator``; ``ATESC_FAULT_NAN_VALUE=nan`` (default), ``inf`` or ``-inf``. It fires once
    per process unless ``ATESC_FAULT_NAN_REPEAT=1`` (then every time STEP is computed).
``ATESC_FAULT_SLOW_SAVE=SECONDS``
    Sleep before renaming each checkpoint, so a test can deliver signals while a save is in flight.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

PREFIX = "ATESC_FAULT_"
ACTIVE = any(name.startswith(PREFIX) for name in os.environ)

KILL_POINTS = ("mid_step", "eval", "checkpoint", "before_rename")
_CKPT_TMP = re.compile(r"^\.step-(\d+)\.safetensors\.tmp")


def _step(raw: str, name: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"error: env {name}: expected a step number, got {raw!r}") from None


def _parse() -> dict[str, Any]:
    env = os.environ
    plan: dict[str, Any] = {"kill": {}, "enospc": {}, "nan": None, "slow_save": 0.0, "fired": set()}
    if "ATESC_FAULT_KILL_AT" in env:
        point, _, step = env["ATESC_FAULT_KILL_AT"].partition(":")
        if point not in KILL_POINTS:
            raise SystemExit(f"error: env ATESC_FAULT_KILL_AT: unknown point {point!r} (one of {', '.join(KILL_POINTS)})")
        plan["kill"][point] = _step(step, "ATESC_FAULT_KILL_AT")
    if "ATESC_FAULT_KILL_BEFORE_RENAME" in env:
        raw = env["ATESC_FAULT_KILL_BEFORE_RENAME"].strip()
        plan["kill"]["before_rename"] = None if raw in ("", "1", "true", "yes") else _step(raw, "ATESC_FAULT_KILL_BEFORE_RENAME")
    if "ATESC_FAULT_ENOSPC" in env:
        for item in env["ATESC_FAULT_ENOSPC"].split(","):
            target, _, step = item.strip().partition(":")
            if target not in ("checkpoint", "events"):
                raise SystemExit(f"error: env ATESC_FAULT_ENOSPC: unknown target {target!r} (checkpoint or events)")
            plan["enospc"][target] = _step(step, "ATESC_FAULT_ENOSPC")
    if "ATESC_FAULT_NAN_AT_STEP" in env:
        plan["nan"] = {
            "step": _step(env["ATESC_FAULT_NAN_AT_STEP"], "ATESC_FAULT_NAN_AT_STEP"),
            "loss": env.get("ATESC_FAULT_NAN_LOSS", "student"),
            "value": float(env.get("ATESC_FAULT_NAN_VALUE", "nan")),
            "repeat": env.get("ATESC_FAULT_NAN_REPEAT", "") not in ("", "0", "false", "no"),
        }
    if "ATESC_FAULT_SLOW_SAVE" in env:
        plan["slow_save"] = float(env["ATESC_FAULT_SLOW_SAVE"])
    return plan


PLAN: dict[str, Any] = _parse() if ACTIVE else {}


def _due(wanted: int | None, step: int) -> bool:
    return wanted is None or wanted == step


def kill_self(point: str) -> None:
    """SIGKILL: no handler, no cleanup, no flush; exactly what an OOM killer or `kill -9` does."""
    os.write(2, f"fault: SIGKILL at {point}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # pragma: no cover - the signal is delivered before this returns


def point(name: str, step: int) -> None:
    """A named place in the training loop; kills the process when the plan says so."""
    kill = PLAN.get("kill", {})
    if name in kill and _due(kill[name], step):
        kill_self(f"{name}:{step}")


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def before_rename(tmp: Path) -> None:
    """``core.rundir.checkpoint.before_rename`` hook: the temp checkpoint is complete and fsynced."""
    m = _CKPT_TMP.match(tmp.name)
    if m is None:  # the step comes from the file name; anything else is not a step checkpoint
        return
    step = int(m.group(1))
    if PLAN["slow_save"]:
        time.sleep(PLAN["slow_save"])
    kill = PLAN["kill"]
    if "before_rename" in kill and _due(kill["before_rename"], step):
        kill_self(f"before_rename:{step}")
    enospc = PLAN["enospc"]
    if "checkpoint" in enospc and (enospc["checkpoint"] is None or step >= enospc["checkpoint"]):
        raise _enospc()


def event_write(fh: Any, data: bytes, step: int | None) -> None:
    """Called before an event line is appended: may write half of it and raise ENOSPC."""
    enospc = PLAN.get("enospc", {})
    if "events" not in enospc:
        return
    wanted = enospc["events"]
    if "events" in PLAN["fired"] or wanted is None or (step is not None and step >= wanted):
        first = "events" not in PLAN["fired"]
        PLAN["fired"].add("events")
        if first:  # a real full disk often takes part of a write
            fh.write(data[: len(data) // 2])
            fh.flush()
        raise _enospc()


def poison(value: Any, step: int, loss: str) -> Any:
    """Return ``value`` made non-finite when the plan targets ``loss`` at ``step`` (a tensor stays one)."""
    nan = PLAN.get("nan")
    if not nan or nan["loss"] != loss or nan["step"] != step:
        return value
    key = f"nan:{loss}:{step}"
    if key in PLAN["fired"] and not nan["repeat"]:
        return value
    PLAN["fired"].add(key)
    os.write(2, f"fault: {nan['value']} in the {loss} loss at step {step}\n".encode())
    return value * 0 + nan["value"]


def generator_guide(guide: Any, step: int) -> Any:
    """Wrap the generator's guide so that its extra loss is non-finite at ``step`` (any guide, or none)."""
    nan = PLAN.get("nan")
    if not nan or nan["loss"] != "generator" or nan["step"] != step:
        return guide
    key = f"nan:generator:{step}"
    if key in PLAN["fired"] and not nan["repeat"]:
        return guide

    class Poisoned:
        def plan(self, x: Any) -> Any:
            from core.dfkd.base import GuidePlan

            return guide.plan(x) if guide is not None else GuidePlan()

        def extra_loss(self, x: Any, teacher_logits: Any) -> Any:
            return poison(x.float().mean(), step, "generator")

    return Poisoned()


def install() -> None:
    """Hook what cannot be reached from a call site (the checkpoint writer); no-op when inactive."""
    if not ACTIVE:
        return
    from core.rundir import checkpoint

    checkpoint.before_rename = before_rename
