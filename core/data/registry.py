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
    num_classes: int = 10
    cached: bool = True  # False: derived cheaply from another (cached) domain, e.g. a class subset


DOMAINS: Registry[DomainSpec] = Registry("data domain")


def register_domain(
    name: str, *, offline: bool, description: str, num_classes: int = 10, cached: bool = True
) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        DOMAINS.register(name)(DomainSpec(fn, offline, description, num_classes, cached))
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


def _check(name: str, split: Split, num_classes: int) -> None:
    """Catch builder bugs at the source rather than as odd accuracies downstream."""
    for x, y in ((split[0], split[1]), (split[2], split[3])):
        if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise RuntimeError(f"domain {name}: bad images {tuple(x.shape)} {x.dtype}")
        bad_range = y.numel() > 0 and (int(y.min()) < 0 or int(y.max()) >= num_classes)
        if y.dtype != torch.int64 or y.shape != (x.shape[0],) or bad_range:
            raise RuntimeError(f"domain {name}: bad labels {tuple(y.shape)} {y.dtype}")


def _base_name(name: str) -> str:
    base = name[len(PATCHED_PREFIX) :] if name.startswith(PATCHED_PREFIX) else name
    if not base or base not in DOMAINS:
        raise _unknown(name)
    return base


def load_split(name: str, root: Path, seed: int) -> Split:
    """The uint8 split of ``name`` (built on first use, then read from the cache)."""
    if name.startswith(PATCHED_PREFIX):
        # Stamping is a cheap slice write, so only the base domain is cached.
        tx, ty, vx, vy = load_split(_base_name(name), root, seed)
        return stamp_patch(tx), ty, stamp_patch(vx), vy
    spec = DOMAINS.get(_base_name(name))
    if not spec.cached:
        split = spec.build(root, seed)
        _check(name, split, spec.num_classes)
        return split
    path = cache.cache_path(root, name, seed)
    split = cache.read(path)
    if split is None:
        if not spec.offline:
            from core.datasets import refuse_tampered

            refuse_tampered(root, name)
        split = spec.build(root, seed)
        _check(name, split, spec.num_classes)
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
    name = name.strip()
    tx, ty, vx, vy = load_split(name, Path(root), int(seed))
    return DomainData(name=name, train_x=to_float(tx), train_y=ty, test_x=to_float(vx), test_y=vy,
                      num_classes=DOMAINS.get(_base_name(name)).num_classes)
