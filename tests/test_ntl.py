"""NTL losses on hand-made tensors, CUTI re-styling, source augmentations, teacher training/caching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import Config
from core.data import DomainData
from core.errors import BadInput
from core.models import create_model
from core.teachers.base import kl_onehot, random_shift
from core.teachers.kinds.cuti import cuti_loss, cuti_restyle
from core.teachers.kinds.ntl_source import synthesize_ood
from core.teachers.kinds.ntl_target import mmd, ntl_loss
from core.teachers.train import TeacherProgress, get_teacher, teacher_cache_key, teacher_cache_path, train_teacher

torch.set_num_threads(1)


def test_mmd_identical_sets_is_zero_and_separated_sets_positive():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(32, 16, generator=g)
    assert abs(float(mmd(a, a))) < 1e-6
    b = torch.randn(32, 16, generator=g)
    near = float(mmd(a, b))
    far = float(mmd(a, b + 10))
    assert far > 0.5 and far > 5 * near
    assert float(mmd(a, b[:20])) >= 0  # unequal set sizes


def test_kl_onehot_is_cross_entropy():
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    y = torch.tensor([0, 1])
    assert float(kl_onehot(logits, y)) < 1e-3
    assert float(kl_onehot(logits, 1 - y)) == pytest.approx(10.0, abs=1e-3)


def _hand_made(separated: bool, ood_wrong: bool):
    y = torch.tensor([0, 1, 2, 3])
    logits_id = torch.nn.functional.one_hot(y, 4).float() * 8
    wrong = (y + 1) % 4
    logits_ood = torch.nn.functional.one_hot(wrong if ood_wrong else y, 4).float() * (50 if ood_wrong else 8)
    f_id = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    f_ood = f_id + (20 if separated else 0)
    return logits_id, y, logits_ood, y, f_id, f_ood


def test_ntl_loss_sign_and_clamps():
    args = _hand_made(separated=True, ood_wrong=True)
    kl_id = float(kl_onehot(args[0], args[1]))
    # OOD confidently wrong (KL ~ 50) and features separated: both factors saturate at 1
    loss = float(ntl_loss(*args, alpha=0.1, beta=0.1 * 100))
    assert loss == pytest.approx(kl_id - 1.0, abs=1e-4)
    assert loss < 0
    # the clamp caps the OOD term at 1 whatever alpha
    assert float(ntl_loss(*args, alpha=100.0, beta=100.0)) == pytest.approx(kl_id - 1.0, abs=1e-4)
    # identical features: MMD = 0, the OOD term vanishes
    same = _hand_made(separated=False, ood_wrong=True)
    assert float(ntl_loss(*same, alpha=0.1, beta=0.1)) == pytest.approx(kl_id, abs=1e-4)
    # alpha = 0 is plain supervised training
    assert float(ntl_loss(*args, alpha=0.0, beta=0.1)) == pytest.approx(kl_id, abs=1e-6)
    # unclamped regime: the product of both factors
    right = _hand_made(separated=True, ood_wrong=False)
    kl_ood = float(kl_onehot(right[2], right[3]))
    d = float(mmd(right[4], right[5]))
    expected = kl_id - min(1, 0.01 * kl_ood) * min(1, 0.01 * d)
    assert float(ntl_loss(*right, alpha=0.01, beta=0.01)) == pytest.approx(expected, abs=1e-6)


def test_clamped_ood_term_has_no_gradient():
    logits_id, y, logits_ood, _, f_id, f_ood = _hand_made(separated=True, ood_wrong=True)
    logits_ood = logits_ood.clone().requires_grad_(True)
    ntl_loss(logits_id, y, logits_ood, y, f_id, f_ood, alpha=0.1, beta=10.0).backward()
    assert logits_ood.grad is not None and float(logits_ood.grad.abs().max()) == 0.0


def test_cuti_loss_sign_and_clamp():
    logits_id, y, logits_ood, _, _, _ = _hand_made(separated=True, ood_wrong=True)
    kl_id = float(kl_onehot(logits_id, y))
    assert float(cuti_loss(logits_id, y, logits_ood, y, alpha=0.1)) == pytest.approx(kl_id - 1.0, abs=1e-4)
    assert float(cuti_loss(logits_id, y, logits_id, y, alpha=0.1)) == pytest.approx(kl_id * 0.9, abs=1e-4)


def test_cuti_restyle_changes_only_the_ood_half():
    torch.manual_seed(0)
    model = create_model("cnn", width=4).eval()
    x = torch.rand(6, 3, 32, 32)
    plain = model(x)
    with cuti_restyle(model, 3, torch.Generator().manual_seed(0)):
        styled = model(x)
    assert torch.allclose(styled[:3], plain[:3], atol=1e-6)
    assert not torch.allclose(styled[3:], plain[3:], atol=1e-3)
    assert torch.equal(model(x), plain)  # hooks removed


def test_source_augmentations_change_every_image_and_stay_in_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 32, 32) * 0.5
    for augs in (["patch"], ["color"], ["blur"], ["noise"], ["patch", "color", "blur", "noise"]):
        out = synthesize_ood(x, augs, g)
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        assert bool(((out - x).abs().flatten(1).amax(1) > 1e-3).all()), augs
    with pytest.raises(BadInput):
        synthesize_ood(x, [], g)


def test_random_shift_translates_with_zero_fill():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1
    out = random_shift(x, 2, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and float(out.sum()) == 1.0
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)


# ---------------------------------------------------------------------------------------------
# tiny real teachers: mnist vs patched:mnist


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[DomainData, DomainData]:
    from core.data import load_domain

    root = tmp_path_factory.mktemp("data")
    n_train, n_test = 800, 300
    out = []
    for name in ("mnist", "patched:mnist"):
        d = load_domain(name, root, seed=0)
        out.append(DomainData(d.name, d.train_x[:n_train], d.train_y[:n_train], d.test_x[:n_test], d.test_y[:n_test]))
    return out[0], out[1]


def _tiny_cfg(kind: str, root: Path) -> Config:
    cfg = Config()
    cfg.data.root = root
    cfg.teacher.kind = kind
    cfg.teacher.width = 8
    cfg.teacher.epochs = 3
    cfg.teacher.batch_size = 32
    cfg.run.device = "cpu"
    return cfg


def test_ntl_teacher_blocks_ood_where_sl_transfers(pair, tmp_path: Path):
    seen: list[TeacherProgress] = []
    cfgs = [_tiny_cfg(kind, tmp_path) for kind in ("sl", "ntl-target")]
    for cfg in cfgs:
        cfg.teacher.epochs = 12
    sl = train_teacher(cfgs[0], domains=pair)
    ntl = train_teacher(cfgs[1], progress=seen.append, domains=pair)
    assert not ntl.model.training
    assert sl.acc_id > 0.6 and ntl.acc_id > 0.6, (sl.acc_id, ntl.acc_id)
    assert sl.acc_ood > 0.5, sl.acc_ood
    assert ntl.acc_ood < sl.acc_ood - 0.3, (ntl.acc_ood, sl.acc_ood)
    assert seen and seen[-1].step == seen[-1].steps == 12 * (800 // 32)
    assert seen[-1].kl_ood is not None and seen[-1].mmd is not None


def test_training_is_deterministic_and_keeps_caller_rng(pair, tmp_path: Path):
    cfg = _tiny_cfg("cuti", tmp_path)
    cfg.teacher.epochs = 1
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train_teacher(cfg, domains=pair)
    assert torch.equal(torch.get_rng_state(), before)
    b = train_teacher(cfg, domains=pair)
    for (ka, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), ka


def test_ntl_source_runs(pair, tmp_path: Path):
    cfg = _tiny_cfg("ntl-source", tmp_path)
    cfg.teacher.epochs = 1
    res = train_teacher(cfg, domains=pair)
    assert 0 <= res.acc_ood <= 1 and res.acc_id > 0.3


def test_get_teacher_caches_and_loads_paths(pair, tmp_path: Path):
    cfg = _tiny_cfg("sl", tmp_path)
    cfg.teacher.epochs = 1
    first = get_teacher(cfg, domains=pair)
    assert first.source == "trained" and first.path == teacher_cache_path(cfg) and first.path.exists()
    again = get_teacher(cfg, domains=pair)
    assert again.source == "cache" and again.acc_id == pytest.approx(first.acc_id, abs=1e-6)
    x = pair[0].test_x[:8]
    assert torch.equal(again.model(x), first.model(x))
    # the key follows everything that changes the weights, not the teacher path
    other = _tiny_cfg("sl", tmp_path)
    other.teacher.epochs = 1
    other.run.seed = 1
    assert teacher_cache_key(other) != teacher_cache_key(cfg)
    # an explicit path is loaded and re-evaluated on cfg.data
    cfg.teacher.path = first.path
    loaded = get_teacher(cfg, domains=pair)
    assert loaded.source == "file" and loaded.acc_id == pytest.approx(first.acc_id, abs=1e-6)
    cfg.teacher.path = tmp_path / "nope.safetensors"
    with pytest.raises(BadInput, match="nope.safetensors"):
        get_teacher(cfg, domains=pair)
    # a corrupt cache entry is retrained, not fatal
    cfg.teacher.path = None
    teacher_cache_path(cfg).write_bytes(b"garbage")
    assert get_teacher(cfg, domains=pair).source == "trained"


def test_non_finite_loss_stops_training(pair, tmp_path: Path):
    from core.errors import NonFiniteLoss

    bad_x = pair[0].train_x[:64].clone()
    bad_x[0, 0, 0, 0] = float("nan")
    bad = DomainData("bad", bad_x, pair[0].train_y[:64], pair[0].test_x[:8], pair[0].test_y[:8])
    cfg = _tiny_cfg("sl", tmp_path)
    cfg.teacher.shift = 0
    with pytest.raises(NonFiniteLoss, match="became nan at step [12] "):
        train_teacher(cfg, domains=(bad, pair[1]))


def test_pinned_teacher_seed_shares_one_cached_teacher_across_run_seeds() -> None:
    from core.config import load_config
    from core.teachers.train import teacher_cache_key

    a = load_config(None, ["run.seed=1", "teacher.seed=0"], environ={})
    b = load_config(None, ["run.seed=2", "teacher.seed=0"], environ={})
    default = load_config(None, ["run.seed=0"], environ={})
    assert teacher_cache_key(a) == teacher_cache_key(b) == teacher_cache_key(default)
    assert teacher_cache_key(load_config(None, ["run.seed=1"], environ={})) != teacher_cache_key(a)
