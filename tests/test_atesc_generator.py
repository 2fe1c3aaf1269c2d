"""ATEsc as the generator's guide: the plan (weights, robust bank, BN completion), the feature
split and its gate, and what the synthesizer does with a plan."""

from __future__ import annotations

import pytest
import torch

from core.atesc import ATEsc, auroc, feature_split, two_means
from core.config import ATEscConfig
from core.dfkd.base import GuidePlan
from core.dfkd.bn_hooks import BNStatsHooks
from core.losses import kd_loss
from tests.test_atesc import tiny_bn_net
from tests.test_dfkd import StubGuide, build

torch.set_num_threads(1)


def test_auroc_matches_hand_counts() -> None:
    v = torch.tensor([0.1, 0.4, 0.35, 0.8])
    pos = torch.tensor([False, False, True, True])
    assert auroc(v, pos) == pytest.approx(0.75)  # pairs (pos > neg): (.35>.1), (.8>.1), (.8>.4) of 4
    assert auroc(torch.ones(4), pos) == pytest.approx(0.5)  # ties count half
    assert auroc(v, torch.zeros(4, dtype=torch.bool)) is None


def _two_clusters(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n // 2, 16, generator=g) * 0.1 + torch.eye(16)[0] * 3
    b = torch.randn(n // 2, 16, generator=g) * 0.1 + torch.eye(16)[1] * 3
    return torch.cat([a, b]), torch.arange(n) >= n // 2


def test_two_means_recovers_two_clusters() -> None:
    feats, truth = _two_clusters()
    member = two_means(feats)
    assert torch.equal(member, truth) or torch.equal(member, ~truth)


def test_feature_split_orients_by_robustness_and_gates() -> None:
    feats, second = _two_clusters()
    fragile_score = torch.where(second, 2.0, 0.1) + torch.linspace(0, 0.05, 40)  # cluster 2 is fragile
    mask, sep = feature_split(feats, fragile_score, gate=0.75)
    assert torch.equal(mask, second) and sep == pytest.approx(1.0)
    # same robustness in both clusters (an SL teacher's classes): the gate keeps the batch whole
    g = torch.Generator().manual_seed(1)
    mask, sep = feature_split(feats, torch.rand(40, generator=g), gate=0.75)
    assert bool(mask.all()) and sep is not None and sep < 0.75
    # one cluster only
    one = torch.randn(40, 16, generator=g) * 0.01 + 5
    mask, sep = feature_split(one, torch.rand(40, generator=g), gate=0.75)
    assert bool(mask.all()) and (sep is None or sep < 0.75)


def test_bn_loss_with_completion_matches_the_mixture() -> None:
    """Hand-made statistics: running mean 0.5 = a half/half mix of ID (mean 0) and OOD (mean 1)."""
    bn = torch.nn.BatchNorm2d(1)
    bn.running_mean.fill_(0.5)
    bn.running_var.fill_(0.25)
    net = torch.nn.Sequential(bn)
    hooks = BNStatsHooks(net)
    ident = torch.zeros(8, 1, 2, 2)
    ood = torch.ones(8, 1, 2, 2)
    with hooks.capture():
        net.eval()(ident)
        alone = float(hooks.bn_loss())
    with hooks.capture():
        net(torch.cat([ident, ood]))
        mixed = float(hooks.bn_loss())
    assert alone == pytest.approx(0.5 + 0.25) and mixed == pytest.approx(0.0, abs=1e-6)


def test_plan_banks_robust_samples_and_tops_up_to_the_mixing_ratio() -> None:
    cfg = ATEscConfig(split="quantile", fragile_share=0.75, generator_split=True, bn_mix=0.5, bank_size=64)
    a = ATEsc(tiny_bn_net(), cfg)
    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16)
    plan = a.plan(x)
    assert len(a.bank) == 4 and a.bank.count(fragile_only=True) == 0  # the 4 robust samples
    assert plan.weights is not None and int(plan.weights.sum()) == 12
    _, split = a.last_split
    assert torch.equal(plan.weights.bool(), split.fragile)
    # OOD share (4 robust + m banked) / (16 + m) = 0.5 -> m = 8, scaled by the trap evidence (0.1 after
    # one split batch at momentum 0.9: 8 * 0.1 rounds to 1); it grows while batches keep splitting
    assert a.trap_evidence == pytest.approx(0.1)
    assert plan.completion is not None and plan.completion.shape == (1, 3, 16, 16)
    for _ in range(30):
        plan = a.plan(torch.rand(16, 3, 16, 16))
    assert a.trap_evidence > 0.95 and plan.completion is not None and plan.completion.shape == (8, 3, 16, 16)
    restored = ATEsc(tiny_bn_net(), cfg)
    restored.load_state(a.state())
    assert restored.trap_evidence == a.trap_evidence and len(restored.bank) == len(a.bank)


def test_plan_without_generator_split_is_plain_or_adv_mask() -> None:
    x = torch.rand(16, 3, 16, 16)
    plain = ATEsc(tiny_bn_net(), ATEscConfig(split="quantile", fragile_share=0.25, forget_weight=0.0)).plan(x)
    assert plain.weights is None and plain.completion is None and plain.adv_weights is None
    # forgetting on forces the adversarial mask (and makes the generator need the guide)
    forgetting = ATEsc(tiny_bn_net(), ATEscConfig(split="quantile", fragile_share=0.25, forget_weight=0.2))
    assert forgetting.guides_generator(w_adv=1.0) and not forgetting.guides_generator(w_adv=0.0)
    assert int(forgetting.plan(x).adv_weights.sum()) == 4
    assert not ATEsc(tiny_bn_net(), ATEscConfig(forget_weight=0.0)).guides_generator(w_adv=1.0)
    masked = ATEsc(tiny_bn_net(), ATEscConfig(split="quantile", fragile_share=0.25, adv_mask=True)).plan(x)
    assert masked.adv_weights is not None and int(masked.adv_weights.sum()) == 4
    none_fragile = ATEsc(tiny_bn_net(), ATEscConfig(split="threshold", threshold=1e9, adv_mask=True)).plan(x)
    assert torch.equal(none_fragile.adv_weights, torch.ones(16))  # an all-robust batch counts everything


def test_generator_split_with_an_empty_bank_is_plain_dfq() -> None:
    """An SL teacher's batches stay whole: no robust sample, no bank, the same update as DFQ."""
    cfg = ATEscConfig(split="quantile", fragile_share=1.0, generator_split=True)
    steps = []
    for guide in (None, "atesc"):
        synth, teacher, student = build("dfq")
        g = ATEsc(teacher, cfg) if guide else None
        torch.manual_seed(5)
        steps.append(synth.generator_step(student, guide=g))
        if g is not None:
            assert len(g.bank) == 0
    assert steps[0].loss == pytest.approx(steps[1].loss, rel=1e-6)
    assert torch.equal(steps[0].x, steps[1].x)


def test_synthesizer_applies_plan_weights_and_completion() -> None:
    synth, teacher, student = build("dfq")
    weights = torch.zeros(32)
    weights[:8] = 1.0
    completion = torch.rand(6, 3, 16, 16)
    guide = StubGuide(lambda x, t: None, GuidePlan(weights=weights, completion=completion))
    torch.manual_seed(3)
    step = synth.generator_step(student, guide=guide)
    (x,) = guide.planned
    with torch.no_grad():
        t, s = teacher(x), student.eval()(x)
        synth.hooks.clear()
        with synth.hooks.capture():
            teacher(torch.cat([x, completion]))
            bn = float(synth.hooks.bn_loss())
    expected_adv = -kd_loss(s, t, T=synth.cfg.dfkd.temperature, weight=weights)
    assert step.parts["adv"] == pytest.approx(float(expected_adv), rel=1e-4, abs=1e-6)
    assert step.parts["bn"] == pytest.approx(bn, rel=1e-4)
    oh = torch.nn.functional.cross_entropy(t[:8], t[:8].argmax(1))
    assert step.parts["oh"] == pytest.approx(float(oh), rel=1e-4)
