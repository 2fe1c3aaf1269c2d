"""Offline image domains and local full-dataset readers, looked up by name.

    from core.data import load_domain, domain_names
    d = load_domain("patched:mnist", root="data", seed=0)   # d.train_x: (N, 3, 32, 32) in [0, 1]

Every domain is 3x32x32 float32 in [0, 1] with labels 0..9, built once and cached under
``root/cache`` as safetensors. Importing a builder module registers its domain.
"""

from core.data.domain import DomainData
from core.data.patched import PATCH_SIZE, patch_region, stamp_patch
from core.data.registry import DOMAINS, domain_names, load_domain

# Registration side effects, in the order domain_names() lists them.
from core.data import mnist, uci, color, syn, files, classmap  # noqa: E402, F401  isort: skip

__all__ = ["DOMAINS", "PATCH_SIZE", "DomainData", "domain_names", "load_domain", "patch_region", "stamp_patch"]
