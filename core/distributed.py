"""Data-parallel training over ``torch.distributed``, following torchrun's environment contract.

Each process reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (set by ``atesc run --nproc N``
or by ``torchrun``); process groups use gloo on CPU and NCCL on CUDA. With one process nothing
here touches ``torch.distributed``, so single-process runs are unchanged.

What data parallelism means for a DFKD run: every process draws its own ``batch_size / N``
latents (its own RNG stream, seeded by rank), the student and the generator are wrapped in
DistributedDataParallel so their gradients are averaged over the global batch, and rank 0
alone writes events, samples and checkpoints. A checkpoint holds every rank's own state (torch
RNG, replay pool), so a run resumed with the same N continues exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from core.errors import BadInput

if TYPE_CHECKING:
    from core.config import Config

# Rank 0 may build datasets and train the teacher while the others wait at a barrier: a
# paper-scale teacher takes hours. A dead peer is noticed at once (its sockets close), so a long
# timeout only delays reporting a peer that hangs while alive.
INIT_TIMEOUT = timedelta(hours=6)


@dataclass
class DistContext:
    """Which process this is. Only the main process writes events, checkpoints and samples."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> DistContext:
        env = os.environ
        rank = int(env.get("RANK", "0"))
        return cls(rank=rank, world_size=int(env.get("WORLD_SIZE", "1")), local_rank=int(env.get("LOCAL_RANK", rank)))

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        if device.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return device

    def init(self, device: torch.device) -> None:
        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=INIT_TIMEOUT,
                                rank=self.rank, world_size=self.world_size)  # fmt: skip

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any rank (a stop request seen by one)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` in DistributedDataParallel when there are several processes (rank 0's weights win)."""
        if not self.enabled:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def average_grads_before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """For parameters outside any DDP module (e.g. CMI's head): start from rank 0's values (as DDP
        does for its modules) and all-reduce their gradients on every ``step()``."""
        if not self.enabled:
            return
        world = self.world_size
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    dist.broadcast(p, 0)

        def hook(opt: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad.div_(world)

        optimizer.register_step_pre_hook(hook)

    def sync_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP broadcasts them before each of its forwards, but each rank's own training forward then
        updates them locally, and the eval-mode student in the generator's adversarial term reads
        them. Synchronising at every step boundary keeps all ranks equal to what a checkpoint
        holds, so a resumed run continues exactly.
        """
        if self.enabled:
            for buf in module.buffers():
                dist.broadcast(buf, 0)

    def check_in_sync(self, modules: dict[str, nn.Module], device: torch.device) -> None:
        """Raise when the ranks' weights differ (DDP keeps them bit-identical; a difference is a bug
        that would otherwise go unnoticed, since rank 0 alone saves)."""
        if not self.enabled:
            return
        for name, module in modules.items():
            flat = torch.cat([p.detach().double().flatten() for p in module.parameters()])
            local = torch.stack([flat.sum(), (flat * flat).sum()]).to(device)
            parts = [torch.empty_like(local) for _ in range(self.world_size)]
            dist.all_gather(parts, local)
            if any(not torch.equal(parts[0], p) for p in parts[1:]):
                raise RuntimeError(f"{name} weights differ between processes: data-parallel ranks out of sync")

    def rng_state(self) -> dict[str, torch.Tensor]:
        """This process's torch RNG states (CPU, and CUDA when used)."""
        states = {"rng/torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["rng/cuda"] = torch.cuda.get_rng_state()
        return states

    def set_rng_state(self, states: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(states["rng/torch"])
        if "rng/cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state(states["rng/cuda"])

    def gather(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's ``tensors`` as ``{"<rank>/<key>": tensor}`` on the CPU: the per-rank state a
        checkpoint keeps. Keys and shapes may differ between ranks (each rank's ATEsc bank fills at
        its own pace), so each rank sends its dict as one safetensors blob. Empty with one process."""
        if not self.enabled:
            return {}
        from safetensors.torch import load as st_load
        from safetensors.torch import save as st_save

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        local = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(device)
        sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([local.numel()], dtype=torch.int64, device=device))
        longest = int(max(int(n) for n in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8, device=device)
        padded[: local.numel()] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        out: dict[str, torch.Tensor] = {}
        for r, (part, n) in enumerate(zip(parts, sizes)):
            for key, value in st_load(part[: int(n)].cpu().numpy().tobytes()).items():
                out[f"{r}/{key}"] = value
        return out

    def mine(self, gathered: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's entries of ``gather``'s result, keys without the rank."""
        prefix = f"{self.rank}/"
        return {k[len(prefix):]: v for k, v in gathered.items() if k.startswith(prefix)}


def check_parallel(cfg: Config, world_size: int) -> None:
    """Settings that cannot work with ``world_size`` processes, as one-line errors (before anything starts)."""
    if world_size <= 1:
        return
    if cfg.dfkd.batch_size % world_size:
        raise BadInput(f"{cfg.dfkd.batch_size} does not split over {world_size} processes", field="dfkd.batch_size")
    if cfg.run.nan_policy == "rollback":
        # A NaN seen by one rank would roll back that rank alone and desynchronise the others.
        raise BadInput("rollback is single-process only; use stop with several processes", field="run.nan_policy")


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (checkpoints and evaluation use it)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
