"""CMI's pieces on tiny hand-made tensors, and a tiny CMI run that resumes bit-exact."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.config import load_config
from core.dfkd.base import GuidePlan
from core.dfkd.methods.cmi import (
    MemoryBank,
    _resample,
    contrastive_loss,
    crop_boxes,
    decision_adversarial,
    global_view,
    local_view,
    sample_targets,
)
from core.rundir import checkpoint as ckpt
from core.rundir.events import read_events
from core.train import Trainer
from tests.test_dfkd import StubGuide, build

torch.set_num_threads(1)
CPU = torch.device("cpu")


# ---------------------------------------------------------------- targets


def test_balanced_targets_have_equal_counts_and_random_leftovers():
    torch.manual_seed(0)
    t = sample_targets(32, 10, "balanced", CPU)
    counts = torch.bincount(t, minlength=10)
    assert sorted(counts.tolist()) == [3] * 8 + [4] * 2
    assert torch.equal(t, t.sort().values)
    leftovers = {tuple(torch.bincount(sample_targets(32, 10, "balanced", CPU), minlength=10).eq(4).nonzero().flatten().tolist())
                 for _ in range(20)}
    assert len(leftovers) > 1  # the two extra classes change from batch to batch
    assert sample_targets(30, 10, "balanced", CPU).tolist() == [c for c in range(10) for _ in range(3)]


def test_random_targets_are_uniform_and_seeded():
    torch.manual_seed(1)
    t = sample_targets(20_000, 10, "random", CPU)
    counts = torch.bincount(t, minlength=10).float()
    assert float(counts.min()) > 1800 and float(counts.max()) < 2200  # 2000 expected, std ~42
    torch.manual_seed(1)
    assert torch.equal(sample_targets(20_000, 10, "random", CPU), t)


def test_one_hot_pulls_the_teacher_toward_the_sampled_targets():
    # Only the one-hot term acts. The tiny teacher reaches a few classes only, so the check is that
    # its predictions follow the (sorted) targets, not that they equal them.
    results = {}
    for g_steps in (1, 40):
        synth, teacher, student = build("cmi", w_bn=0.0, cmi={"targets": "balanced", "g_steps": g_steps, "w_adv": 0.0, "w_cr": 0.0})
        torch.manual_seed(0)
        step = synth.generator_step(student)
        torch.manual_seed(0)
        targets = synth._new_batch()  # the same draws as the step's first ones
        with torch.no_grad():
            pred = teacher(step.x).argmax(1)
        assert set(step.parts) == {"bn", "oh"}
        corr = float(torch.corrcoef(torch.stack([pred.float(), targets.float()]))[0, 1]) if pred.unique().numel() > 1 else 0.0
        results[g_steps] = (step.parts["oh"], corr, pred.unique().numel())
    assert results[40][0] < results[1][0] - 0.3, results
    assert results[40][1] > 0.5 and results[40][2] >= 3, results


# ---------------------------------------------------------------- views


def test_resample_crops_a_quadrant_and_shifts_whole_pixels():
    img = torch.zeros(1, 1, 8, 8)
    img[..., :4, :4], img[..., :4, 4:], img[..., 4:, :4], img[..., 4:, 4:] = 1.0, 2.0, 3.0, 4.0
    one = torch.ones(1)
    # top-left quadrant: width 0.5 from share 0 -> scale 0.5, shift 2*0 + 0.5 - 1; its last row and
    # column blend a quarter of the neighbouring quadrants (bilinear resize), the rest is exact
    tl = _resample(img, 0.5 * one, 0.5 * one, -0.5 * one, -0.5 * one, "border")
    assert torch.equal(tl[..., :7, :7], torch.ones(1, 1, 7, 7))
    assert tl[0, 0, 0, 7] == 0.75 * 1 + 0.25 * 2 and tl[0, 0, 7, 0] == 0.75 * 1 + 0.25 * 3
    # shift by 2 pixels right (reads x + 2) with zero fill, exactly like a padded crop
    shifted = _resample(img, one, one, 2 * 2 / 8 * one, 0 * one, "zeros")
    expected = torch.zeros_like(img)
    expected[..., :6] = img[..., 2:]
    assert torch.allclose(shifted, expected, atol=1e-5)
    mirrored = _resample(img, -one, one, 0 * one, 0 * one, "zeros")
    assert torch.allclose(mirrored, img.flip(3), atol=1e-6)


def test_global_view_is_a_padded_shift_or_its_mirror():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8, requires_grad=True)
    y = global_view(x, pad=2)
    assert y.shape == x.shape
    padded = F.pad(x.detach(), (2, 2, 2, 2))
    for i in range(16):
        candidates = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        candidates += [c.flip(2) for c in candidates]
        assert min(float((y[i].detach() - c).abs().max()) for c in candidates) < 1e-5
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_local_crops_cover_a_quarter_to_all_of_the_image_and_are_seeded():
    torch.manual_seed(3)
    boxes = crop_boxes(5000, 0.25, CPU)
    left, top, w, h = boxes.unbind(1)
    area = w * h
    assert float(area.min()) >= 0.25 - 1e-6 and float(area.max()) <= 1 + 1e-6
    assert float(area.min()) < 0.27 and float(area.max()) > 0.95  # the whole range is used
    assert float(left.min()) >= 0 and float((left + w).max()) <= 1 + 1e-6
    assert float(top.min()) >= 0 and float((top + h).max()) <= 1 + 1e-6
    ratio = w / h
    unclamped = (w < 1) & (h < 1)
    assert float(ratio[unclamped].min()) >= 0.75 - 1e-5 and float(ratio[unclamped].max()) <= 4 / 3 + 1e-5
    torch.manual_seed(3)
    assert torch.equal(crop_boxes(5000, 0.25, CPU), boxes)
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    torch.manual_seed(9)
    a = local_view(x, 0.25)
    torch.manual_seed(9)
    b = local_view(x, 0.25)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, local_view(x, 0.25))
    a.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


# ---------------------------------------------------------------- losses


def test_decision_adversarial_counts_only_agreeing_samples():
    s = torch.tensor([[2.0, 0.0], [0.0, 2.0]], requires_grad=True)
    t = torch.tensor([[3.0, 0.0], [3.0, 0.0]])  # sample 0 agrees (class 0), sample 1 does not

    def kl(p_logits, q_logits):
        p, q = p_logits.softmax(0), q_logits.softmax(0)
        return float((p * (p / q).log()).sum())

    masked = decision_adversarial(s, t, agree_only=True)
    assert float(masked.detach()) == pytest.approx(-kl(t[0], s[0].detach()) / 2, rel=1e-5)  # mean over the whole batch
    masked.backward()
    assert float(s.grad[1].abs().sum()) == 0.0 and float(s.grad[0].abs().sum()) > 0
    plain = decision_adversarial(s, t, agree_only=False)
    assert float(plain.detach()) == pytest.approx(-(kl(t[0], s[0].detach()) + kl(t[1], s[1].detach())) / 2, rel=1e-5)
    weighted = decision_adversarial(s, t, agree_only=False, weight=torch.tensor([0.0, 1.0]))
    assert float(weighted.detach()) == pytest.approx(-kl(t[1], s[1].detach()) / 2, rel=1e-5)


def test_contrastive_loss_with_bank_anchors_on_a_hand_made_case():
    e = math.e
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # batch only: each row's logits (1, 0) toward its own key -> log(1 + 1/e)
    assert float(contrastive_loss(a, a, 2, 1.0)) == pytest.approx(math.log(1 + 1 / e), rel=1e-6)
    # one bank row equal to row 0: rows 0 and 2 see logits (1, 0, 1), row 1 sees (0, 1, 0)
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    keys = anchors.detach().clone().requires_grad_()
    batch = (math.log(2 * e + 1) - 1 + math.log(e + 2) - 1) / 2
    bank = math.log(2 * e + 1) - 1
    loss = contrastive_loss(anchors, keys, 2, 1.0)
    assert float(loss.detach()) == pytest.approx(batch + bank, rel=1e-6)
    loss.backward()
    assert keys.grad is None and anchors.grad is not None  # keys (global views) are detached
    e2 = e * e  # temperature 0.5 doubles every logit
    sharp = (math.log(2 * e2 + 1) - 2 + math.log(e2 + 2) - 2) / 2 + math.log(2 * e2 + 1) - 2
    assert float(contrastive_loss(anchors, keys, 2, 0.5).detach()) == pytest.approx(sharp, rel=1e-6)


def test_memory_bank_samples_distinct_filled_rows():
    bank = MemoryBank(10, 2, CPU)
    assert bank.sample(4).shape == (0, 2)
    bank.add(torch.arange(12.0).view(6, 2))
    assert torch.equal(bank.sample(8), bank.items())  # fewer rows than asked: all of them
    torch.manual_seed(0)
    rows = bank.sample(3)
    assert rows.shape == (3, 2) and len({tuple(r) for r in rows.tolist()}) == 3
    assert all(r in bank.items().tolist() for r in rows.tolist())
    torch.manual_seed(0)
    assert torch.equal(bank.sample(3), rows)


# ---------------------------------------------------------------- the synthesizer


def test_more_inversion_steps_give_a_lower_loss_and_the_bank_fills():
    losses = {}
    for g_steps in (1, 15):
        synth, _, student = build("cmi", cmi={"g_steps": g_steps})
        torch.manual_seed(0)
        losses[g_steps] = synth.generator_step(student).loss
        assert synth.bank.count == 32 and synth.bank.dim == 2 * synth.hooks.feature_dim
    assert losses[15] < losses[1] - 1.0, losses


def test_generator_is_reinitialised_for_every_batch_unless_reused():
    for reset in (True, False):
        synth, _, student = build("cmi", cmi={"reset_generator": reset})
        synth.generator_step(student)
        after_first = [p.detach().clone() for p in synth.generator.parameters()]
        synth.generator_step(student)
        w = synth.generator.l1.weight.detach()
        # re-initialised: N(0, 0.02) plus a few Adam steps of lr 1e-2; reused: keeps drifting
        assert (float(w.std()) < 0.05) == reset
        assert not torch.equal(after_first[0], w)


def test_sample_reads_the_batch_latents_not_fresh_noise():
    synth, _, student = build("cmi")
    step = synth.generator_step(student)
    again = synth.sample(8)
    assert again.shape == (8, 3, 16, 16) and not again.requires_grad
    with torch.no_grad():
        assert torch.equal(again, synth.generator(synth.z[:8]))
    # one more Adam step after the best batch at most: close to it, unlike a fresh latent draw
    with torch.no_grad():
        fresh = synth.generator(torch.randn(32, 16))
    assert float((synth.sample() - step.x).abs().mean()) < float((fresh - step.x).abs().mean())


def test_a_guide_plans_every_inversion_step_and_its_plan_applies():
    def extra(x: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        assert x.requires_grad and teacher_logits.shape == (32, 10)
        return 0.25 * x.mean()

    steps = {}
    plans = {"none": GuidePlan(), "zero weights": GuidePlan(weights=torch.zeros(32)),
             "completion": GuidePlan(completion=torch.rand(16, 3, 16, 16))}
    for name, plan in plans.items():
        synth, _, student = build("cmi")
        guide = StubGuide(extra, plan)
        torch.manual_seed(0)
        steps[name] = synth.generator_step(student, guide=guide)
        assert len(guide.planned) == 3 and all(not x.requires_grad and x.shape == (32, 3, 16, 16) for x in guide.planned)
    p = steps["none"].parts
    assert steps["none"].loss == pytest.approx(p["bn"] + p["oh"] + 0.5 * p["adv"] + 0.8 * p["cr"] + p["extra"], rel=1e-5)
    assert steps["zero weights"].parts["oh"] == 0.0 and steps["zero weights"].parts["adv"] == 0.0
    # completion rows join the teacher's BN statistics
    assert steps["completion"].parts["bn"] != p["bn"]


def test_a_data_parallel_share_of_the_batch_is_honoured():
    synth, _, student = build("cmi")
    synth.batch_size = 16  # what the trainer sets on each of 2 ranks
    step = synth.generator_step(student)
    assert step.x.shape == (16, 3, 16, 16) and synth.z.shape == (16, 16) and synth.bank.count == 16


# ---------------------------------------------------------------- resume


def _run(preset: Path, run_dir: Path, overrides: list[str], *, steps: int | None = None, resume: bool = False) -> None:
    cfg = load_config(preset, overrides)
    Trainer(cfg, run_dir).run(resume=resume, max_steps=steps)


def test_tiny_cmi_run_resumes_bit_exact(tiny_preset: Path, tmp_path: Path) -> None:
    overrides = ["dfkd.method='cmi'", "dfkd.iterations=4", "dfkd.cmi_g_steps=2", "dfkd.cmi_n_neg=8",
                 "dfkd.cmi_bank_size=48", "dfkd.pool_size=40", "atesc.adv_mask=true"]
    _run(tiny_preset, tmp_path / "ref", overrides)
    _run(tiny_preset, tmp_path / "cut", overrides, steps=2)
    assert ckpt.load_latest_valid(tmp_path / "cut" / "checkpoints").step == 2
    _run(tiny_preset, tmp_path / "cut", overrides, resume=True)
    ref = ckpt.load_latest_valid(tmp_path / "ref" / "checkpoints")
    got = ckpt.load_latest_valid(tmp_path / "cut" / "checkpoints")
    assert ref.step == got.step == 4
    keys = [k for k in ref.tensors if k.startswith(("model/", "optim/", "extra/"))]
    assert any("head" in k for k in keys) and any("bank" in k for k in keys) and any("pool" in k for k in keys)
    assert all(torch.equal(ref.tensors[k], got.tensors[k]) for k in keys)
    count = next(k for k in keys if k.endswith("bank_count"))
    assert int(ref.tensors[count]) == 48 and int(ref.tensors[count.replace("count", "ptr")]) == 4 * 16 - 48

    def evals(d: Path) -> list[tuple[int, float, float]]:
        return sorted({(e.step, e.student_acc_id, e.student_acc_ood) for e in read_events(d / "events.jsonl")[0]
                       if e.kind == "eval"})

    assert evals(tmp_path / "cut") == evals(tmp_path / "ref")
