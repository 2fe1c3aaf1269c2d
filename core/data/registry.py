"""Domain registry and the one public loader: names -> builders, with caching and checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.data import cache
from core.data.domain import IMAGE_SIZE, DomainData, Split, to_float
from core.data.patched import PATCHED_PREFIX, stamp_patch
from core.errors import BadInput
from core.registry import Registry

Builder = Callable[[Path, int], Split]  # (root, seed) -> uint8 images / int64 labels


@dataclass(frozen=True)
class DomainSpec:
    build: Builder
    offline: bool  # True: needs nothing but installed packages; False: reads files under root
    description: str


DOMAINS: Registry[DomainSpec] = Registry("data domain")


def register_domain(name: str, *, offline: bool, description: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        DOMAINS.register(name)(DomainSpec(fn, offline, description))
        return fn

    return deco


def domain_names(offline_only: bool = False) -> list[str]:
    """Built-in names: offline domains, their patched variants, then file-backed datasets.

    Any registered name also works as ``patched:<name>``; only the offline ones are listed.
    """
    offline = [n for n in DOMAINS if DOMAINS.get(n).offline]
    files = [n for n in DOMAINS if not DOMAINS.get(n).offline]
    names = offline + [PATCHED_PREFIX + n for n in offline]
    return names if offline_only else names + files


def _unknown(name: str) -> BadInput:
    known = ", ".join(domain_names())
    return BadInput(f"unknown data domain {name!r} (known: {known}; any of them as patched:<name>)")


def _check(name: str, split: Split) -> None:
    """Catch builder bugs at the source rather than as odd accuracies downstream."""
    for x, y in ((split[0], split[1]), (split[2], split[3])):
        if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise RuntimeError(f"domain {name}: bad images {tuple(x.shape)} {x.dtype}")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],) or int(y.min()) < 0 or int(y.max()) > 9:
            raise RuntimeError(f"domain {name}: bad labels {tuple(y.shape)} {y.dtype}")


def _load_uint8(name: str, root: Path, seed: int) -> Split:
    if name.startswith(PATCHED_PREFIX):
        base = name[len(PATCHED_PREFIX) :]
        if not base:
            raise _unknown(name)
        # Stamping is a cheap slice write, so only the base domain is cached.
        tx, ty, vx, vy = _load_uint8(base, root, seed)
        return stamp_patch(tx), ty, stamp_patch(vx), vy
    if name not in DOMAINS:
        raise _unknown(name)
    path = cache.cache_path(root, name, seed)
    split = cache.read(path)
    if split is None:
        split = DOMAINS.get(name).build(root, seed)
        _check(name, split)
        cache.write(path, split, {"domain": name, "seed": str(seed), "version": str(cache.DATA_VERSION)})
    return split


def load_domain(name: str, root: str | Path, seed: int = 0) -> DomainData:
    """Load (building and caching under ``root/cache`` on first use) one domain.

    Deterministic for (name, seed). The seed drives procedurally generated content (textures,
    font renderings); real-image train/test membership is fixed regardless of seed, so a test
    set never leaks into a teacher trained under another run seed.
    """
    if not isinstance(name, str) or not name:
        raise _unknown(str(name))
    tx, ty, vx, vy = _load_uint8(name.strip(), Path(root), int(seed))
    return DomainData(name=name.strip(), train_x=to_float(tx), train_y=ty, test_x=to_float(vx), test_y=vy)
