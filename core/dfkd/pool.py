"""Replay pool of synthetic samples (CMI's ImagePool, shared by every method).

The student trains on batches drawn from everything the generator has produced recently, not only
on the newest batch. Each sample is stored with the teacher's logits (the teacher is frozen, so
they never go stale) and ATEsc's verdict (fragile = ID-like), so a guided run can replay fragile
samples only. A ring buffer of fixed capacity; draws use torch's global RNG on the pool's device,
and the contents go into checkpoints, so a resumed run draws exactly what an uninterrupted one does.
"""

from __future__ import annotations

import torch
from torch import Tensor


class SamplePool:
    def __init__(self, capacity: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError("pool capacity must be >= 1")
        self.capacity = capacity
        self.device = torch.device(device)
        self.x: Tensor | None = None
        self.logits: Tensor | None = None
        self.fragile = torch.zeros(capacity, dtype=torch.bool, device=self.device)
        self.size = 0
        self.head = 0  # next slot to overwrite

    def __len__(self) -> int:
        return self.size

    def _allocate(self, x: Tensor, logits: Tensor) -> None:
        self.x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype, device=self.device)
        self.logits = torch.zeros((self.capacity, *logits.shape[1:]), dtype=logits.dtype, device=self.device)

    def add(self, x: Tensor, logits: Tensor, fragile: Tensor | None = None) -> None:
        """Append a batch (oldest samples are overwritten once full). ``fragile`` defaults to all True."""
        x, logits = x.detach().to(self.device), logits.detach().to(self.device)
        n = x.shape[0]
        flags = torch.ones(n, dtype=torch.bool, device=self.device) if fragile is None else fragile.to(self.device).bool()
        if self.x is None:
            self._allocate(x, logits)
        assert self.x is not None and self.logits is not None
        if n >= self.capacity:  # only the newest `capacity` samples survive
            x, logits, flags, n = x[-self.capacity :], logits[-self.capacity :], flags[-self.capacity :], self.capacity
        idx = (self.head + torch.arange(n, device=self.device)) % self.capacity
        self.x[idx] = x
        self.logits[idx] = logits.to(self.logits.dtype)
        self.fragile[idx] = flags
        self.head = int((self.head + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def count(self, fragile_only: bool = False) -> int:
        return int(self.fragile[: self.size].sum()) if fragile_only else self.size

    def sample(self, n: int, fragile_only: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(x, teacher logits, fragile flags) of ``n`` samples drawn uniformly with replacement.

        ``fragile_only``: only samples stored as fragile (a robust sample is never returned); raises
        ``ValueError`` when there are none.
        """
        if self.x is None or self.logits is None or self.size == 0:
            raise ValueError("the pool is empty")
        if fragile_only:
            candidates = torch.nonzero(self.fragile[: self.size]).flatten()
            if candidates.numel() == 0:
                raise ValueError("the pool holds no fragile samples")
            idx = candidates[torch.randint(candidates.numel(), (n,), device=self.device)]
        else:
            idx = torch.randint(self.size, (n,), device=self.device)
        return self.x[idx], self.logits[idx], self.fragile[idx]

    # -- checkpoint surface -------------------------------------------------------------------
    def state(self) -> dict[str, Tensor]:
        """The slots in place (not re-ordered) plus the write head: sampling indexes slots, so a
        reloaded pool must keep every sample where it was for the resumed draws to match."""
        if self.x is None or self.logits is None:
            return {}
        s = self.size
        return {"x": self.x[:s].clone(), "logits": self.logits[:s].clone(), "fragile": self.fragile[:s].clone(),
                "head": torch.tensor(self.head, dtype=torch.int64)}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        self.x = self.logits = None
        self.fragile.zero_()
        self.size = self.head = 0
        if not tensors:
            return
        x, logits = tensors["x"].to(self.device), tensors["logits"].to(self.device)
        if x.shape[0] > self.capacity:
            raise ValueError(f"checkpoint pool holds {x.shape[0]} samples, more than dfkd.pool_size={self.capacity}")
        self._allocate(x, logits)
        assert self.x is not None and self.logits is not None
        s = x.shape[0]
        self.x[:s], self.logits[:s] = x, logits
        self.fragile[:s] = tensors["fragile"].to(self.device).bool()
        self.size, self.head = s, int(tensors["head"])
