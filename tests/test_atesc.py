"""ATEsc and loss helpers on crafted tensors and a tiny random BatchNorm net (fast, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.atesc import ATEsc, Splitter, pgd_attack, robustness_score, two_means_threshold
from core.config import ATEscConfig
from core.losses import class_balance, entropy, forget_loss, kd_loss, kl_per_sample

torch.set_num_threads(1)


def tiny_bn_net(n_classes: int = 10, width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, n_classes),
    )
    net.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            net(torch.rand(16, 3, 16, 16))
    return net.eval()


# -- losses ----------------------------------------------------------------------------------
def test_kd_loss_zero_for_identical_positive_otherwise():
    torch.manual_seed(1)
    t = torch.randn(6, 5)
    assert kd_loss(t.clone(), t, T=2.0).abs().item() < 1e-6
    assert kd_loss(torch.randn(6, 5), t, T=2.0).item() > 0


def test_kd_loss_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = torch.tensor([[0.0, 2.0, 0.0], [1.0, -1.0, 0.5]])
    T = 2.0
    expected = []
    for si, ti in zip(s.tolist(), t.tolist()):
        ps = [math.exp(v / T) for v in si]
        pt = [math.exp(v / T) for v in ti]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        expected.append(sum(a * math.log(a / b) for a, b in zip(pt, ps)) * T * T)
    per = kd_loss(s, t, T, reduction="none")
    assert per.tolist() == pytest.approx(expected, rel=1e-5)
    assert kd_loss(s, t, T).item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    # matches torch's kl_div batchmean formulation
    ref = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    assert kd_loss(s, t, T).item() == pytest.approx(ref.item(), rel=1e-5)
    # masks: weighted mean over the selected samples, 0 for an empty mask
    assert kd_loss(s, t, T, weight=torch.tensor([True, False])).item() == pytest.approx(expected[0], rel=1e-5)
    empty = kd_loss(s, t, T, weight=torch.tensor([False, False]))
    assert empty.item() == 0.0


def test_class_balance_finite_with_zero_probabilities():
    logits = torch.tensor([[1000.0, -1000.0, -1000.0]] * 4, requires_grad=True)
    v = class_balance(logits)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(logits.grad).all()
    assert class_balance(torch.zeros(4, 10)).item() == pytest.approx(-math.log(10), rel=1e-5)


def test_uniform_forget_raises_student_entropy():
    torch.manual_seed(2)
    s = torch.randn(8, 10) * 3
    t = torch.randn(8, 10)
    s.requires_grad_(True)
    loss = forget_loss("uniform", s, t, cap=2.0).mean()
    assert (forget_loss("uniform", s, t, cap=2.0) >= -1e-6).all()
    loss.backward()
    with torch.no_grad():
        s2 = s - 0.1 * s.grad
        assert entropy(s2).mean() > entropy(s).mean()
    assert forget_loss("uniform", torch.zeros(2, 10), t[:2], cap=2.0).abs().max() < 1e-6


def test_neg_kl_forget_pushes_away_and_caps():
    torch.manual_seed(3)
    t = torch.randn(8, 10)
    s = (t + 0.3 * torch.randn(8, 10)).requires_grad_(True)
    loss = forget_loss("neg-kl", s, t, cap=2.0).mean()
    loss.backward()
    with torch.no_grad():
        before = kl_per_sample(t, s).mean()
        after = kl_per_sample(t, s - 0.5 * s.grad).mean()
    assert after > before
    # the cap holds: far-away students sit at -cap with zero gradient
    far = (-10 * t).requires_grad_(True)
    v = forget_loss("neg-kl", far, t, cap=2.0)
    assert torch.allclose(v, torch.full_like(v, -2.0))
    v.sum().backward()
    assert far.grad.abs().max() == 0


# -- scores ----------------------------------------------------------------------------------
def test_robustness_scores_on_hand_made_logits():
    clean = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    adv = torch.tensor([[1.0, 2.0, 0.0], [0.0, 2.0, 1.0]])
    assert robustness_score("flip", clean, adv).tolist() == [1.0, 0.0]
    shift = robustness_score("shift", clean, adv)
    assert shift[1].item() == pytest.approx(0.0, abs=1e-7) and shift[0].item() > 0
    assert shift[0].item() == pytest.approx(kl_per_sample(clean[:1], adv[:1]).item(), rel=1e-6)
    # margin: clean 3-1 = 2; adv class-0 margin 1-2 = -1 -> drop 3; second sample unchanged -> 0
    assert robustness_score("margin", clean, adv).tolist() == pytest.approx([3.0, 0.0])
    with pytest.raises(ValueError):
        robustness_score("nope", clean, adv)


# -- splitters -------------------------------------------------------------------------------
def test_quantile_split_share_is_exact():
    torch.manual_seed(4)
    score = torch.rand(64)
    sp = Splitter(ATEscConfig(split="quantile", fragile_share=0.25))
    m = sp.split(score)
    assert m.dtype == torch.bool and int(m.sum()) == 16
    assert score[m].min() >= score[~m].max()
    assert int(Splitter(ATEscConfig(split="quantile", fragile_share=0.0)).split(score).sum()) == 0
    assert int(Splitter(ATEscConfig(split="quantile", fragile_share=1.0)).split(score).sum()) == 64
    # ties: still exact
    assert int(sp.split(torch.zeros(10)).sum()) == 3  # round(2.5) -> 3 (half up)


def test_threshold_split():
    sp = Splitter(ATEscConfig(split="threshold", threshold=0.05))
    assert sp.split(torch.tensor([0.0, 0.05, 0.2, 0.01])).tolist() == [False, True, True, False]


def test_adaptive_split_bimodal_and_momentum():
    torch.manual_seed(5)
    low = torch.rand(40) * 0.01
    high = 1.0 + torch.rand(24)
    score = torch.cat([low, high])[torch.randperm(64)]
    sp = Splitter(ATEscConfig(split="adaptive", momentum=0.9))
    m = sp.split(score)
    assert torch.equal(m, score > 0.5)
    t1 = sp.split_point
    assert math.log1p(0.01) < t1 < math.log1p(1.0)
    # a second batch with a much higher split point moves the EMA by (1 - momentum) of the gap
    score2 = torch.cat([torch.full((32,), 10.0), torch.full((32,), 100.0)])
    t_batch = two_means_threshold(torch.log1p(score2.double()))
    sp.split(score2)
    assert sp.split_point == pytest.approx(0.9 * t1 + 0.1 * t_batch, rel=1e-9)
    # all-equal batch keeps the point
    before = sp.split_point
    sp.split(torch.full((8,), 3.0))
    assert sp.split_point == before


def test_splitter_state_round_trip():
    sp = Splitter(ATEscConfig(split="adaptive", momentum=0.5))
    sp.split(torch.tensor([0.0, 0.0, 5.0, 6.0]))
    sp.split(torch.tensor([0.0, 0.1, 2.0, 9.0]))
    other = Splitter(ATEscConfig(split="adaptive", momentum=0.5))
    other.load_state(sp.state())
    assert other.split_point == sp.split_point and other.initialized
    s = torch.tensor([0.0, 0.3, 4.0, 7.0])
    assert torch.equal(other.split(s), sp.split(s)) and other.split_point == sp.split_point
    # through ATEsc.state() with prefixes
    a = ATEsc(tiny_bn_net(), ATEscConfig(split="adaptive"))
    a.splitter.split(torch.tensor([0.0, 1.0]))
    b = ATEsc(tiny_bn_net(), ATEscConfig(split="adaptive"))
    b.load_state(a.state())
    assert b.splitter.split_point == a.splitter.split_point


# -- attack ----------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 3])
def test_pgd_stays_in_ball_and_increases_kl(steps):
    net = tiny_bn_net()
    params_before = [p.detach().clone() for p in net.parameters()]
    torch.manual_seed(6)
    x = torch.rand(16, 3, 16, 16)
    x[:2] = 0.0  # samples at the boundary of [0, 1]
    eps = 0.03
    x_adv = pgd_attack(net, x, eps=eps, steps=steps)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not net.training
    with torch.no_grad():
        clean, adv = net(x), net(x_adv)
        rand = net((x + eps * torch.sign(torch.randn_like(x))).clamp(0, 1))
    kl_adv = kl_per_sample(clean, adv).mean()
    assert kl_adv > 1e-6
    assert kl_adv > kl_per_sample(clean, rand).mean()  # beats a random corner of the ball
    for p, q in zip(params_before, net.parameters()):
        assert torch.equal(p, q) and q.grad is None


def test_analyze_and_student_loss():
    net = tiny_bn_net()
    a = ATEsc(net, ATEscConfig(eps=0.03, steps=1, score="shift", split="quantile", fragile_share=0.5))
    x = torch.rand(16, 3, 16, 16)
    r = a.analyze(x)
    assert r.fragile.shape == (16,) and r.fragile.dtype == torch.bool and int(r.fragile.sum()) == 8
    assert r.teacher_logits.shape == (16, 10) and r.score.shape == (16,)
    with torch.no_grad():
        assert torch.allclose(r.teacher_logits, net(x), atol=1e-5)
    s = torch.randn(16, 10, requires_grad=True)
    total, kd, fg = a.student_loss(s, r.teacher_logits, r.fragile, T=1.0)
    total.backward()
    assert torch.isfinite(total) and s.grad is not None
    assert total.item() == pytest.approx(kd.item() + 0.2 * fg.item(), rel=1e-5)


@pytest.mark.parametrize("forget", ["uniform", "neg-kl"])
@pytest.mark.parametrize("all_fragile", [True, False])
def test_empty_group_gives_finite_losses(forget, all_fragile):
    a = ATEsc(tiny_bn_net(), ATEscConfig(forget=forget))
    s = torch.randn(8, 10, requires_grad=True)
    t = torch.randn(8, 10)
    mask = torch.full((8,), all_fragile)
    total, kd, fg = a.student_loss(s, t, mask, T=2.0)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(s.grad).all()
    assert (fg if all_fragile else kd).item() == 0.0
    # zero-size batch too
    total0, _, _ = a.student_loss(torch.randn(0, 10), torch.randn(0, 10), torch.zeros(0, dtype=torch.bool))
    assert total0.item() == 0.0


def test_steer_loss_differentiable_and_negative():
    net = tiny_bn_net()
    a = ATEsc(net, ATEscConfig(steer_generator=True, steer_weight=1.0))
    z = torch.rand(8, 3, 16, 16, requires_grad=True)
    v = a.steer_loss(z)
    v.backward()
    assert v.item() <= 0 and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    assert a.extra_loss(x, net(x)) is not None
    assert ATEsc(net, ATEscConfig(steer_generator=False)).extra_loss(x, net(x)) is None


def test_steer_loss_reuses_teacher_logits_with_same_value():
    net = tiny_bn_net()
    a = ATEsc(net, ATEscConfig(steer_generator=True, eps=0.03))
    torch.manual_seed(8)
    base = torch.rand(8, 3, 16, 16)
    x1 = base.clone().requires_grad_(True)
    v1 = a.steer_loss(x1)
    v1.backward()
    x2 = base.clone().requires_grad_(True)
    v2 = a.steer_loss(x2, teacher_logits=net(x2))
    v2.backward()
    assert v2.item() == pytest.approx(v1.item(), rel=1e-4, abs=1e-7)
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-3, atol=1e-7)
