"""The training loop: one generator update, then several student updates on that batch, per step.

Reads top to bottom: set up (run directory, teacher, models, optional resume), loop, finish.
Every method (DFQ, CMI) and ATEsc on/off go through the same loop; views (rich panels, the
Textual app, ``--json``) only consume the events it emits.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from core.rundir import checkpoint as ckpt
from core.rundir import faults
from core.config import Config, config_from_toml_text
from core.distributed import DistContext, check_parallel, unwrap
from core.eval import resolve_device
from core.dfkd.pool import SamplePool
from core.errors import BadInput, NonFiniteLoss
from core.losses import kd_loss
from core.rundir.events import (
    EVENTS_FILE,
    CheckpointEvent,
    ErrorEvent,
    EvalEvent,
    EventWriter,
    StartEvent,
    StatusEvent,
    TrainEvent,
    _Event,
)
from core.rundir import CHECKPOINT_DIR, CONFIG_FILE, SAMPLE_GROUPS, TEACHER_REF, RunLock, new_run_dir, sample_file
from core.rundir.safefile import write_atomic
from core.threads import apply_threads

if TYPE_CHECKING:
    from core.atesc import SplitResult

Sink = Callable[[_Event], None]
MAX_ROLLBACKS = 3


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved (``checkpoint`` is its path)."""

    def __init__(self, checkpoint: Path | None, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.checkpoint = checkpoint
        self.signum = signum


@dataclass
class RunResult:
    run_dir: Path
    step: int
    status: str
    student_acc_id: float | None = None
    student_acc_ood: float | None = None
    checkpoint: Path | None = None


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps so a checkpoint is always consistent."""

    signum: int | None = None
    _previous: dict[int, Any] = field(default_factory=dict)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, _frame: object) -> None:
        # A second Ctrl-C while saving is ignored on purpose: the save must finish.
        if self.signum is None:
            self.signum = signum

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> None:
    """Write a PNG grid of (N, 3, H, W) images in [0, 1] (pillow comes with matplotlib)."""
    from PIL import Image

    imgs = images[: nrow * nrow].detach().float().clamp(0, 1).cpu()
    n, c, h, w = imgs.shape
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + 2) + 2, nrow * (w + 2) + 2)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, 2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = imgs[i]
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


class Trainer:
    """A DFKD (optionally ATEsc) run bound to one run directory."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        *,
        sinks: list[Sink] | None = None,
        dist: DistContext | None = None,
        teacher_progress: Callable[[Any], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.sinks = list(sinks or [])
        self.dist = dist or DistContext.from_env()
        self.teacher_progress = teacher_progress
        self.device = self.dist.device(resolve_device(cfg.run.device))
        self.config_toml = cfg.to_toml()
        self.writer: EventWriter | None = None
        self.lock: RunLock | None = None
        self.step = 0
        self.last_eval: EvalEvent | None = None
        self.last_checkpoint: Path | None = None
        self.rollbacks = 0
        self._stop = StopFlag()

    # ------------------------------------------------------------ events

    def emit(self, event: _Event) -> None:
        if not self.dist.is_main:
            return
        if self.writer is not None:
            self.writer.emit(event)
        for sink in self.sinks:
            sink(event)

    def _report(self, *events: _Event) -> None:
        """Record a failure, best effort: a full disk must not hide the error being reported."""
        try:
            for event in events:
                self.emit(event)
        except OSError:
            pass

    # ------------------------------------------------------------ setup

    def _open_run_dir(self, resume: bool) -> None:
        if not self.dist.is_main:
            return
        if not resume and (self.run_dir / CONFIG_FILE).exists():
            raise BadInput("already holds a run; continue it with `atesc resume` or pick a new --run-dir",
                           where=str(self.run_dir))
        if not resume:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.run_dir).acquire()
        if self.lock.stale_owner is not None:
            # stderr: stdout may be a --json event stream or live panels
            print(f"note: took over a stale lock of dead process {self.lock.stale_owner}", file=sys.stderr, flush=True)
        if not resume:
            write_atomic(self.run_dir / CONFIG_FILE, self.config_toml.encode())
            self.writer = EventWriter(self.run_dir / EVENTS_FILE)

    def _open_history(self) -> None:
        """Resume: the event log is appended to only once the checkpoint has loaded and the run is
        rebuilt, so a refused or failed resume never changes what the run says about itself."""
        if self.dist.is_main and self.writer is None:
            self.writer = EventWriter(self.run_dir / EVENTS_FILE)

    def _build(self) -> None:
        from core.atesc import ATEsc
        from core.data import load_domain
        from core.dfkd import create_synthesizer
        from core.models import create_generator, create_model
        from core.teachers.train import get_teacher

        cfg, dev, dist = self.cfg, self.device, self.dist
        self.governor = apply_threads(cfg.run.threads) if dev.type == "cpu" else None
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.run.cudnn_benchmark
        self.emit(StatusEvent(status="running", step=self.step, message="preparing data and teacher"))
        if not dist.is_main:
            dist.barrier()  # rank 0 builds the data and teacher caches first; the others then read them
        id_data = load_domain(cfg.data.id_domain, cfg.data.root.expanduser(), seed=cfg.run.seed)
        ood_data = load_domain(cfg.data.ood_domain, cfg.data.root.expanduser(), seed=cfg.run.seed)
        n = cfg.data.eval_samples
        pin = dev.type == "cuda"  # pinned host memory: the copies to the GPU run asynchronously
        self.eval_sets = {
            "id": (id_data.test_x[:n].pin_memory() if pin else id_data.test_x[:n], id_data.test_y[:n]),
            "ood": (ood_data.test_x[:n].pin_memory() if pin else ood_data.test_x[:n], ood_data.test_y[:n]),
        }
        teacher = get_teacher(cfg, progress=self._teacher_progress)
        if dist.is_main:
            dist.barrier()
        self.teacher_acc = (teacher.acc_id, teacher.acc_ood)
        if self.dist.is_main:
            teacher_path = getattr(teacher, "path", None)
            ref = {"path": str(teacher_path) if teacher_path else None, "teacher_acc_id": teacher.acc_id,
                   "teacher_acc_ood": teacher.acc_ood, "kind": cfg.teacher.kind}
            write_atomic(self.run_dir / TEACHER_REF, json.dumps(ref, indent=2).encode())
        # Models are created after the teacher so that teacher caching never shifts the RNG stream.
        seed_everything(cfg.run.seed + 1 + self.dist.rank)
        # channels_last: oneDNN's faster convolution layout on CPU (steps 0.68-0.89x, bench/step_profile.md)
        cpu = dev.type == "cpu"
        fmt = torch.channels_last if cpu or (dev.type == "cuda" and cfg.run.amp) else torch.contiguous_format
        self.teacher = teacher.model.to(dev, memory_format=fmt).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = create_model(cfg.student.arch, num_classes=id_data.num_classes, width=cfg.student.width)
        self.student = self.student.to(dev, memory_format=fmt)
        self.student_net = dist.wrap(self.student, dev)  # what the student steps call (DDP when N > 1)
        generator = create_generator(cfg.generator.arch, nz=cfg.generator.nz, width=cfg.generator.width)
        generator = generator.to(dev, memory_format=torch.channels_last if cpu else torch.contiguous_format)
        self.synth = create_synthesizer(cfg.dfkd.method, self.teacher, dist.wrap(generator, dev), cfg, dev)
        self.synth.batch_size = cfg.dfkd.batch_size // dist.world_size  # each process draws its share
        in_ddp = {id(p) for p in generator.parameters()}
        for opt in self.synth.optimizers().values():
            # An optimizer wholly outside DDP (CMI's head) is averaged in its step. Extra tensors next
            # to the generator's weights (CMI's latents) are this rank's own samples: left alone.
            if all(id(p) not in in_ddp for g in opt.param_groups for p in g["params"]):
                dist.average_grads_before_step(opt)
        self.opt_s = make_student_optimizer(self.student, cfg)
        # fp16 needs loss scaling; bf16 has fp32's range and needs none.
        fp16 = dev.type == "cuda" and cfg.run.amp and cfg.run.amp_dtype == "fp16"
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.synth.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.atesc = ATEsc(self.teacher, cfg.atesc)
        self.pool = SamplePool(cfg.dfkd.pool_size, dev) if cfg.dfkd.pool_size else None
        self._split_stats: list[tuple[Tensor, Tensor, Tensor, float | None]] = []
        ood_x = self.eval_sets["ood"][0]
        self.sink_class = int(torch.bincount(self.atesc.teacher_logits(ood_x.to(dev)).argmax(dim=1)).argmax())

    def _teacher_progress(self, progress: Any) -> None:
        # Teacher training can take minutes: a signal stops it (nothing to checkpoint yet).
        if self._stop.requested:
            raise KeyboardInterrupt
        if self.teacher_progress is not None:
            self.teacher_progress(progress)

    def _state(self) -> ckpt.TrainState:
        extra = {f"synth/{k}": v for k, v in self.synth.extra_state().items()}
        extra.update({f"atesc/{k}": v for k, v in self.atesc.state().items()})
        if self.pool is not None and not self.dist.enabled:  # several processes: per rank, under dist/
            extra.update({f"pool/{k}": v for k, v in self.pool.state().items()})
        extra.update({f"dist/{k}": v for k, v in getattr(self, "_rank_state", {}).items()})
        modules = {"student": self.student, **{f"synth.{k}": unwrap(m) for k, m in self.synth.modules().items()}}
        optimizers = {"student": self.opt_s, **{f"synth.{k}": o for k, o in self.synth.optimizers().items()}}
        return ckpt.TrainState(step=self.step, modules=modules, optimizers=optimizers, extra=extra,
                               info={"rollbacks": self.rollbacks, "world_size": self.dist.world_size})

    def _restore(self, checkpoint: ckpt.Checkpoint, *, rng: bool = True) -> None:
        state = self._state()
        checkpoint.restore(state, rng=rng)
        saved_world = int(state.info.get("world_size", 1))
        if saved_world != self.dist.world_size:
            raise BadInput(f"written by {saved_world} process(es); resume with --nproc {saved_world}",
                           where=str(checkpoint.path))
        mine = self.dist.mine({k[5:]: v for k, v in state.extra.items() if k.startswith("dist/")})
        if rng and mine:
            self.dist.set_rng_state(mine)
        self.step = state.step
        self.rollbacks = int(state.info.get("rollbacks", 0))
        # With several processes each rank restores its own state (``dist/<rank>/...``): ATEsc's
        # split and bank, the replay pool, CMI's memory bank all fill from that rank's samples.
        own = mine if self.dist.enabled else state.extra
        self.synth.load_extra_state({k[6:]: v for k, v in own.items() if k.startswith("synth/")})
        self.atesc.load_state({k[6:]: v for k, v in own.items() if k.startswith("atesc/")})
        if self.pool is not None:
            self.pool.load_state({k[5:]: v for k, v in own.items() if k.startswith("pool/")})

    # ------------------------------------------------------------ pieces of a step

    def _autocast(self) -> Any:
        if self.device.type == "cuda" and self.cfg.run.amp:
            return torch.autocast("cuda", dtype=torch.float16 if self.cfg.run.amp_dtype == "fp16" else torch.bfloat16)
        return nullcontext()

    def _judge(self, x: Tensor, use_atesc: bool) -> tuple[Tensor, Tensor | None]:
        """The teacher's logits on a new batch and, with ATEsc, its fragile (ID-like) mask."""
        if use_atesc:
            split = self.atesc.analyze(x)
            self._record_split(split)
            return split.teacher_logits, split.fragile
        return self.atesc.teacher_logits(x), None

    def _record_split(self, split: SplitResult) -> None:
        """Split quality on generated samples, for the events: how the teacher's OOD sink class (its
        most frequent answer on real OOD images, known to the evaluation only) falls in each group."""
        sink = split.teacher_logits.argmax(dim=1) == self.sink_class
        self._split_stats.append((split.fragile, sink, split.score, split.separation))

    def _split_quality(self) -> dict[str, float | None]:
        from core.atesc import auroc

        stats, self._split_stats = self._split_stats, []
        if not stats:
            return {}
        fragile = torch.cat([f for f, _, _, _ in stats])
        sink = torch.cat([k for _, k, _, _ in stats])
        score = torch.cat([sc for _, _, sc, _ in stats])
        seps = [sep for _, _, _, sep in stats if sep is not None]

        def share(mask: Tensor) -> float | None:
            return float(sink[mask].float().mean()) if bool(mask.any()) else None

        return {"sink_share_fragile": share(fragile), "sink_share_robust": share(~fragile),
                "score_auroc_sink": auroc(-score, sink), "split_separation": statistics.fmean(seps) if seps else None}

    def _student_lr(self) -> float:
        """The student's learning rate for the coming step (cosine: a pure function of the step, so
        nothing extra needs checkpointing)."""
        s = self.cfg.student
        if s.schedule == "cosine":
            return s.lr * 0.5 * (1.0 + math.cos(math.pi * self.step / self.cfg.dfkd.iterations))
        return s.lr

    def train_step(self) -> TrainEvent:
        cfg = self.cfg
        t0 = time.perf_counter()
        if cfg.student.schedule != "constant":
            for group in self.opt_s.param_groups:
                group["lr"] = self._student_lr()
        use_atesc = self.atesc.active(self.step)
        guide = self.atesc if use_atesc and self.atesc.guides_generator(cfg.dfkd.w_adv) else None
        if faults.ACTIVE:
            guide = faults.generator_guide(guide, self.step + 1)
        verdicts: list[Tensor] = []  # ATEsc's masks of the new batches (the split ratio shown)
        with self._autocast():
            self.student.eval()
            self.atesc.last_split = None
            gen = self.synth.generator_step(self.student_net, guide=guide)
            if faults.ACTIVE:
                faults.point("mid_step", self.step + 1)
            judged = self.atesc.last_split if cfg.atesc.generator_split else None
            x_new = gen.x
            self.student.train()
            for i in range(cfg.dfkd.student_steps):
                if i == 0 or cfg.dfkd.fresh_batches:
                    if i > 0:
                        x_new = self.synth.sample()
                    if i == 0 and judged is not None:
                        # The generator's own batch, already attacked and split by the guide: the
                        # student learns from it instead of paying for a second attack.
                        x_new, split = judged
                        t_new, f_new = split.teacher_logits, split.fragile
                        self._record_split(split)
                    else:
                        t_new, f_new = self._judge(x_new, use_atesc)
                    if f_new is not None:
                        verdicts.append(f_new)
                    self._last_batch = (x_new.detach(), f_new)
                    x, t_logits, fragile = x_new, t_new, f_new
                    if self.pool is not None:
                        self.pool.add(x_new, t_new, f_new)
                if self.pool is not None:  # replay: every student step trains on a draw from the pool
                    fragile_only = use_atesc and cfg.atesc.replay_fragile_only and self.pool.count(True) > 0
                    x, t_logits, fragile = self.pool.sample(x_new.shape[0], fragile_only=fragile_only)
                    fragile = fragile if use_atesc else None
                s_logits = self.student_net(x)
                if fragile is not None:
                    loss, loss_kd, loss_forget = self.atesc.student_loss(s_logits, t_logits, fragile, cfg.dfkd.temperature)
                else:
                    loss = loss_kd = kd_loss(s_logits, t_logits, cfg.dfkd.temperature)
                    loss_forget = torch.zeros(())
                if faults.ACTIVE:
                    loss = faults.poison(loss, self.step + 1, "student")
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"student loss is {loss.item()} at step {self.step + 1}")
                self.opt_s.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.opt_s)
                    self.scaler.update()
                else:
                    loss.backward()
                    self.opt_s.step()
        if not math.isfinite(gen.loss):
            raise NonFiniteLoss(f"generator loss is {gen.loss} at step {self.step + 1}")
        fragile_share = float(torch.cat(verdicts).float().mean()) if verdicts else 1.0
        quality = self._split_quality()
        self.step += 1
        elapsed = time.perf_counter() - t0
        return TrainEvent(
            **quality,
            step=self.step,
            split_id_ratio=fragile_share,
            split_ood_ratio=1.0 - fragile_share,
            loss_generator=float(gen.loss),
            generator_parts=gen.parts,
            loss_kd=float(loss_kd.detach()),
            loss_forget=float(loss_forget.detach()),
            samples_per_s=cfg.dfkd.batch_size / max(elapsed, 1e-9),
            lr_student=float(self.opt_s.param_groups[0]["lr"]),
        )

    def evaluate(self) -> EvalEvent:
        from core.eval import accuracy

        acc = {k: accuracy(self.student, x, y, device=self.device) for k, (x, y) in self.eval_sets.items()}
        if faults.ACTIVE:
            faults.point("eval", self.step)
        png = None
        if self.dist.is_main and getattr(self, "_last_batch", None) is not None:
            png = self._save_samples()
        first = self.step == 0 or self.last_eval is None
        event = EvalEvent(
            step=self.step,
            student_acc_id=acc["id"],
            student_acc_ood=acc["ood"],
            teacher_acc_id=self.teacher_acc[0] if first else None,
            teacher_acc_ood=self.teacher_acc[1] if first else None,
            samples_png=png,
        )
        self.last_eval = event
        return event

    def _save_samples(self) -> str:
        x, fragile = self._last_batch
        name = sample_file(self.step)
        save_grid(x, self.run_dir / name)
        if fragile is not None:
            for group, mask in zip(SAMPLE_GROUPS, (fragile, ~fragile)):
                if mask.any():
                    save_grid(x[mask], self.run_dir / sample_file(self.step, group))
        return name

    def save(self) -> Path | None:
        # Collectives: every rank takes part.
        self.dist.check_in_sync({f"synth.{k}": unwrap(m) for k, m in self.synth.modules().items()}
                                | {"student": self.student}, self.device)
        pool = {f"pool/{k}": v for k, v in self.pool.state().items()} if self.pool is not None else {}
        atesc = {f"atesc/{k}": v for k, v in self.atesc.state().items()}
        synth = {f"synth/{k}": v for k, v in self.synth.extra_state().items()}  # e.g. CMI's memory bank
        self._rank_state = self.dist.gather(self.dist.rng_state() | pool | atesc | synth)
        if not self.dist.is_main:
            return None
        state = self._state()
        for name, module in state.modules.items():
            for key, value in module.state_dict().items():
                if value.is_floating_point() and not torch.isfinite(value).all():
                    raise NonFiniteLoss(f"refusing to save a non-finite checkpoint ({name}.{key})")
        path = ckpt.save_in_dir(self.run_dir / CHECKPOINT_DIR, state, self.config_toml, self.cfg.run.keep_checkpoints)
        self.last_checkpoint = path
        self.emit(CheckpointEvent(step=self.step, path=str(path.relative_to(self.run_dir))))
        if faults.ACTIVE:
            faults.point("checkpoint", self.step)
        return path

    def _recheck_threads(self) -> None:
        """Auto threads: follow the cores other processes leave free (see core.threads)."""
        if self.governor is None:
            return
        before = torch.get_num_threads()
        after = self.governor.recheck()
        if after != before:
            torch.set_num_threads(after)
            self.emit(StatusEvent(status="running", step=self.step, message=f"threads {before} -> {after} "
                                  f"(free cores changed; run.threads unset)"))

    def _rollback(self, exc: NonFiniteLoss) -> None:
        """nan_policy=rollback: reload the last good checkpoint and halve every learning rate.

        The rollback count and the lowered rates survive the reload (the checkpoint may predate
        earlier rollbacks), so a NaN that keeps coming back ends the run after ``MAX_ROLLBACKS``.
        """
        if self.cfg.run.nan_policy != "rollback" or self.rollbacks >= MAX_ROLLBACKS:
            raise exc
        if ckpt.latest_checkpoint(self.run_dir / CHECKPOINT_DIR) is None:
            raise exc
        optimizers = [self.opt_s, *self.synth.optimizers().values()]
        lrs = [[group["lr"] for group in opt.param_groups] for opt in optimizers]
        rollbacks = self.rollbacks
        self._restore(ckpt.load_latest_valid(self.run_dir / CHECKPOINT_DIR), rng=False)
        self.rollbacks = max(rollbacks, self.rollbacks) + 1
        for opt, saved in zip(optimizers, lrs):
            for group, lr in zip(opt.param_groups, saved):
                group["lr"] = lr * 0.5
        self.emit(StatusEvent(status="running", step=self.step,
                              message=f"{exc}; rolled back to step {self.step}, learning rates halved"))

    # ------------------------------------------------------------ the run

    def run(self, *, resume: bool = False, max_steps: int | None = None, stop: StopFlag | None = None) -> RunResult:
        """Train until ``dfkd.iterations`` (or ``max_steps`` more steps). Raises ``Interrupted`` on a signal."""
        faults.install()
        self._open_run_dir(resume)
        stop = self._stop = stop or StopFlag()
        status = "failed"
        try:
            check_parallel(self.cfg, self.dist.world_size)
            self.dist.init(self.device)
            # A resume validates its checkpoint before anything else (fail fast, write nothing).
            resumed_from = ckpt.load_latest_valid(self.run_dir / CHECKPOINT_DIR) if resume else None
            self._build()
            if resumed_from is not None:
                self._restore(resumed_from)
                self._open_history()
            else:
                seed_everything(self.cfg.run.seed + 1000 + self.dist.rank)
            self.emit(StartEvent(
                run_name=self.run_dir.name, teacher_kind=self.cfg.teacher.kind, method=self.cfg.dfkd.method,
                atesc=self.cfg.atesc.enabled, iterations=self.cfg.dfkd.iterations, step=self.step,
                device=str(self.device), world_size=self.dist.world_size, resumed=resume,
                threads=torch.get_num_threads(), config=self.cfg.to_toml_dict(),
            ))
            self.emit(StatusEvent(status="running", step=self.step))
            if self.step == 0 and self.dist.is_main:
                self.emit(self.evaluate())
            end = self.cfg.dfkd.iterations if max_steps is None else min(self.cfg.dfkd.iterations, self.step + max_steps)
            while self.step < end:
                # Every rank stops at the same step, whichever of them got the signal.
                if self.dist.any(stop.requested, self.device):
                    path = self.save()
                    status = "interrupted"
                    self.emit(StatusEvent(status="interrupted", step=self.step, message=f"signal {stop.signum or 'in another process'}"))
                    raise Interrupted(path, stop.signum or signal.SIGINT)
                try:
                    self.dist.sync_buffers(self.student)
                    self.emit(self.train_step())
                except NonFiniteLoss as exc:
                    self._rollback(exc)
                    continue
                if (self.step % self.cfg.run.eval_every == 0 or self.step == end) and self.dist.is_main:
                    self.emit(self.evaluate())
                    self._recheck_threads()
                if self.step % self.cfg.run.checkpoint_every == 0 or self.step == end:
                    self.save()
            status = "done" if self.step >= self.cfg.dfkd.iterations else "paused"
            self.emit(StatusEvent(status=status, step=self.step))
            ev = self.last_eval
            return RunResult(self.run_dir, self.step, status, ev.student_acc_id if ev else None,
                             ev.student_acc_ood if ev else None, self.last_checkpoint)
        except Interrupted:
            raise
        except BadInput as exc:
            self._report(ErrorEvent(message=exc.one_line(), step=self.step),
                         StatusEvent(status="failed", step=self.step, message=exc.one_line()))
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                status = "interrupted"
                self._report(StatusEvent(status="interrupted", step=self.step, message="interrupted before training"))
            else:
                self._report(ErrorEvent(message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                                        step=self.step),
                             StatusEvent(status="failed", step=self.step, message=str(exc)))
            raise
        finally:
            self.dist.shutdown()
            if self.writer is not None:
                self.writer.close()
            if self.lock is not None:
                self.lock.release()



def prepare_resume(run_dir: Path, world_size: int | None = None) -> Config:
    """The config a run directory was started with; a one-line error if it cannot be resumed
    (with ``world_size`` processes, when given: per-rank RNG streams need the same count)."""
    if not run_dir.is_dir():
        raise BadInput("run directory not found", where=str(run_dir))
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise BadInput(f"no {CONFIG_FILE}: not a run directory", where=str(run_dir))
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read: {exc}", where=str(config_path)) from None
    cfg = config_from_toml_text(text, where=str(config_path))
    latest = ckpt.latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if latest is None:
        raise BadInput("no checkpoint to resume from", where=str(run_dir))
    if world_size is not None:
        from core.rundir.safefile import read_safetensors_header

        info = json.loads(read_safetensors_header(latest).get("__metadata__", {}).get("info", "{}"))
        saved = int(info.get("world_size", 1))
        if saved != world_size:
            raise BadInput(f"written by {saved} process(es); resume with --nproc {saved}", where=str(latest))
    return cfg


def make_student_optimizer(student: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    s = cfg.student
    if s.optimizer == "sgd":
        return torch.optim.SGD(student.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    return torch.optim.Adam(student.parameters(), lr=s.lr, weight_decay=s.weight_decay)


def default_run_dir(cfg: Config) -> Path:
    return cfg.run.dir if cfg.run.dir is not None else new_run_dir(cfg.run.runs_root, cfg.run.name)


def preflight(cfg: Config) -> None:
    """Cheap checks of every name and file a run needs, so bad input fails before a run directory exists."""
    from core.data.registry import DOMAINS, PATCHED_PREFIX
    from core.models import GENERATORS, MODELS

    for field_name, name in (("data.id_domain", cfg.data.id_domain), ("data.ood_domain", cfg.data.ood_domain)):
        DOMAINS.get(name.removeprefix(PATCHED_PREFIX), field=field_name)
    MODELS.get(cfg.teacher.arch, field="teacher.arch")
    MODELS.get(cfg.student.arch, field="student.arch")
    GENERATORS.get(cfg.generator.arch, field="generator.arch")
    if cfg.teacher.path is not None:
        from core.teachers.files import load_teacher

        load_teacher(cfg.teacher.path.expanduser())
