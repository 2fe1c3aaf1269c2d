"""atesc.adv_mask: the generator's adversarial term counts only the samples ATEsc judges fragile."""

from __future__ import annotations

import pytest
import torch

from core.atesc import ATEsc
from core.config import ATEscConfig
from core.losses import kd_loss
from tests.test_atesc import tiny_bn_net
from tests.test_dfkd import build

torch.set_num_threads(1)


def test_adv_weights_quantile_mask_and_no_state_change() -> None:
    a = ATEsc(tiny_bn_net(), ATEscConfig(split="quantile", fragile_share=0.25))
    x = torch.rand(16, 3, 16, 16)
    w = a.adv_weights(x)
    assert w.shape == (16,) and w.dtype == torch.float32 and int(w.sum()) == 4
    assert torch.equal(w.bool(), a.analyze(x).fragile)  # the same split the student loss uses


def test_adv_weights_adaptive_reads_but_does_not_move_the_split_point() -> None:
    a = ATEsc(tiny_bn_net(), ATEscConfig(split="adaptive"))
    x = torch.rand(16, 3, 16, 16)
    assert torch.equal(a.adv_weights(x), torch.ones(16))  # no split point yet: every sample counts
    assert not a.splitter.initialized
    a.analyze(x)
    point = a.splitter.split_point
    a.adv_weights(torch.rand(16, 3, 16, 16))
    assert a.splitter.split_point == point


def test_adv_weights_all_robust_counts_everything() -> None:
    a = ATEsc(tiny_bn_net(), ATEscConfig(split="threshold", threshold=1e9))
    assert torch.equal(a.adv_weights(torch.rand(8, 3, 16, 16)), torch.ones(8))


def test_synthesizer_adv_term_uses_the_weights() -> None:
    synth, teacher, student = build("dfq")
    mask = torch.zeros(32)
    mask[:8] = 1.0
    seen: list[torch.Tensor] = []

    def weights(x: torch.Tensor) -> torch.Tensor:
        assert not x.requires_grad  # computed on the detached batch
        seen.append(x.clone())
        return mask

    synth.adv_weight = weights
    torch.manual_seed(3)
    step = synth.generator_step(student)
    (x,) = seen
    with torch.no_grad():
        t, s = teacher(x), student.eval()(x)
    expected = -kd_loss(s, t, T=synth.cfg.dfkd.temperature, weight=mask)
    assert step.parts["adv"] == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    full = -kd_loss(s, t, T=synth.cfg.dfkd.temperature)
    assert float(full) != pytest.approx(float(expected), rel=1e-3)
