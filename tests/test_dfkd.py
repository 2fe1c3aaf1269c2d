"""DFQ / CMI synthesizers on tiny inline BatchNorm nets (fast, CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from core.config import Config
from core.dfkd import CMISynthesizer, DFQSynthesizer, GeneratorStep, create_synthesizer
from core.dfkd.base import GuidePlan
from core.dfkd.bn_hooks import BNStatsHooks
from core.dfkd.methods.cmi import MemoryBank
from core.errors import BadInput

torch.set_num_threads(1)

NZ = 16


class TinyTeacher(nn.Module):
    def __init__(self, width: int = 8, n_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class TinyGenerator(nn.Module):
    def __init__(self, nz: int = NZ, width: int = 8, size: int = 16) -> None:
        super().__init__()
        self.width, self.s = width, size // 4
        self.l1 = nn.Linear(nz, width * self.s * self.s)
        self.net = nn.Sequential(
            nn.BatchNorm2d(width), nn.Upsample(scale_factor=4),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(self.l1(z).view(z.shape[0], self.width, self.s, self.s)))


def make_teacher() -> nn.Module:
    """A tiny BN CNN, quickly fit to random-but-learnable data (class = brightest colour channel
    pattern), so its running statistics and decision regions are not trivial."""
    torch.manual_seed(0)
    t = TinyTeacher()
    opt = torch.optim.Adam(t.parameters(), lr=1e-2)
    for _ in range(15):
        x = torch.rand(64, 3, 16, 16) * torch.rand(64, 3, 1, 1)
        y = (x.mean(dim=(2, 3)) * torch.tensor([1.0, 3.0, 9.0])).sum(1).mul(10 / 6.5).long().clamp(0, 9)
        loss = nn.functional.cross_entropy(t(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return t.eval()


def make_cfg(method: str, **dfkd) -> Config:
    cmi = {"g_steps": 3, "bank_size": 80, "n_neg": 40, "head_dim": 16, **dfkd.pop("cmi", {})}  # dfkd.cmi_* knobs
    cmi_fields = {f"cmi_{k}": v for k, v in cmi.items()}
    return Config(generator={"nz": NZ, "lr": 1e-2}, dfkd={"method": method, "batch_size": 32, **cmi_fields, **dfkd})


def build(method: str, **dfkd):
    teacher = make_teacher()
    torch.manual_seed(1)
    student = TinyTeacher(width=4)
    gen = TinyGenerator()
    synth = create_synthesizer(method, teacher, gen, make_cfg(method, **dfkd), torch.device("cpu"))
    return synth, teacher, student


@pytest.mark.parametrize("method", ["dfq", "cmi"])
def test_generator_loss_decreases(method):
    # CMI re-initialises its generator per batch: its losses fall across batches only without that
    synth, teacher, student = build(method, cmi={"reset_generator": False, "g_steps": 1})
    assert isinstance(synth, {"dfq": DFQSynthesizer, "cmi": CMISynthesizer}[method])
    s_params = [p.detach().clone() for p in student.parameters()]
    student.train()
    losses = []
    for _ in range(25):
        step = synth.generator_step(student)
        assert isinstance(step, GeneratorStep)
        losses.append(step.loss)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, losses
    expected = {"bn", "oh", "adv", "cr"} if method == "cmi" else {"bn", "oh", "balance", "adv"}
    assert set(step.parts) == expected
    # the batch the student trains on: detached, in [0, 1], the configured batch size
    assert step.x.shape == (32, 3, 16, 16) and not step.x.requires_grad
    assert 0 <= float(step.x.min()) and float(step.x.max()) <= 1
    # the student is neither updated nor given gradients, and keeps its mode; teacher untouched
    assert student.training
    for p, q in zip(s_params, student.parameters()):
        assert torch.equal(p, q) and q.grad is None
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training


class StubGuide:
    """A guide with a fixed plan and an extra loss that records what it was given."""

    def __init__(self, extra, plan: GuidePlan | None = None) -> None:  # noqa: ANN001
        self.extra, self._plan, self.planned = extra, plan or GuidePlan(), []

    def plan(self, x: torch.Tensor) -> GuidePlan:
        self.planned.append(x)
        return self._plan

    def extra_loss(self, x: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor | None:
        return self.extra(x, teacher_logits)


def test_guide_extra_loss_is_added_and_receives_graph():
    synth, _, student = build("dfq")
    seen = {}

    def extra(x: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        seen["grad"] = x.requires_grad
        seen["logits"] = (tuple(teacher_logits.shape), teacher_logits.requires_grad)
        return 0.5 * x.mean()

    guide = StubGuide(extra)
    step = synth.generator_step(student, guide=guide)
    assert seen["grad"] and "extra" in step.parts and seen["logits"] == ((32, 10), True)
    assert len(guide.planned) == 1 and not guide.planned[0].requires_grad  # planned on the detached batch
    others = step.parts["bn"] + step.parts["oh"] + 5.0 * step.parts["balance"] + step.parts["adv"]
    assert step.loss == pytest.approx(others + step.parts["extra"], rel=1e-4)


def test_dfq_step_is_deterministic():
    runs = []
    for _ in range(2):
        synth, _, student = build("dfq")
        torch.manual_seed(7)
        runs.append([synth.generator_step(student).x for _ in range(3)][-1])
    assert torch.equal(runs[0], runs[1])


def test_cmi_memory_bank_fifo_and_round_trip():
    synth, _, student = build("cmi")
    assert isinstance(synth, CMISynthesizer)
    bank = synth.bank
    assert bank.count == 0 and set(synth.modules()) == {"generator", "head"}
    assert set(synth.optimizers()) == {"generator", "head"}
    synth.generator_step(student)
    assert bank.count == 32 and bank.ptr == 32
    synth.generator_step(student)
    synth.generator_step(student)  # 96 rows into 80: wraps
    assert bank.count == 80 and bank.ptr == 16
    state = synth.extra_state()
    assert set(state) == {"cmi.bank", "cmi.bank_ptr", "cmi.bank_count"}
    assert state["cmi.bank"].shape == (80, 2 * synth.hooks.feature_dim)  # local and global features

    # a fresh synthesizer restored from the state (and the same modules/RNG) continues identically
    fresh, _, _ = build("cmi")
    fresh.generator.load_state_dict(synth.generator.state_dict())
    fresh.head.load_state_dict(synth.head.state_dict())
    # deep copies: Optimizer.load_state_dict would otherwise share the moment tensors
    fresh.opt_g.load_state_dict(copy.deepcopy(synth.opt_g.state_dict()))
    fresh.opt_head.load_state_dict(copy.deepcopy(synth.opt_head.state_dict()))
    fresh.load_extra_state(state)
    assert torch.equal(fresh.bank.items(), bank.items())
    torch.manual_seed(3)
    a = synth.generator_step(student)
    torch.manual_seed(3)
    b = fresh.generator_step(student)
    assert a.loss == b.loss and torch.equal(a.x, b.x)
    assert torch.equal(fresh.bank.bank, synth.bank.bank)


def test_memory_bank_order_and_validation():
    bank = MemoryBank(5, 2, torch.device("cpu"))
    bank.add(torch.arange(6.0).view(3, 2))
    bank.add(torch.arange(6.0, 12.0).view(3, 2))
    assert bank.items()[:, 0].tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]  # oldest first, first row evicted
    other = MemoryBank(4, 2, torch.device("cpu"))
    with pytest.raises(ValueError):
        other.load_state(bank.state())
    empty = MemoryBank(0, 2, torch.device("cpu"))
    empty.add(torch.ones(3, 2))
    assert empty.count == 0 and empty.items().shape == (0, 2)


def test_bn_hooks_dormant_outside_capture_and_zero_at_running_stats():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    net = nn.Sequential(bn)
    hooks = BNStatsHooks(net, keep_instance_means=True)
    net(torch.randn(4, 3, 8, 8))
    assert hooks._losses == []
    x = torch.randn(256, 3, 8, 8)
    with torch.no_grad():
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(x.transpose(0, 1).flatten(1).var(1, unbiased=False))
    net.eval()
    with hooks.capture():
        net(x)
    assert hooks.bn_loss().item() < 1e-5
    assert hooks.instance_features().shape == (256, 3)
    hooks.remove()


def test_unknown_method_and_teacher_without_bn():
    with pytest.raises(BadInput, match="dfkd method"):
        create_synthesizer("nope", make_teacher(), TinyGenerator(), make_cfg("dfq"), torch.device("cpu"))
    no_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(BadInput, match="BatchNorm2d"):
        create_synthesizer("dfq", no_bn, TinyGenerator(), make_cfg("dfq"), torch.device("cpu"))


def test_non_finite_generator_loss_raises_before_step():
    from core.errors import NonFiniteLoss

    synth, _, student = build("dfq")
    before = [p.detach().clone() for p in synth.generator.parameters()]
    with pytest.raises(NonFiniteLoss):
        synth.generator_step(student, guide=StubGuide(lambda x, _t: x.sum() * float("nan")))
    for p, q in zip(before, synth.generator.parameters()):
        assert torch.equal(p, q)
