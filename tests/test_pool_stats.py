"""The replay pool (ring buffer, fragile-only draws, checkpoint round trip) and paired statistics."""

from __future__ import annotations

import pytest
import torch

from core.dfkd.pool import SamplePool
from core.stats import paired_difference


def _batch(start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return ids.view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(), ids.view(n, 1).expand(n, 3).clone()


def test_pool_keeps_the_newest_capacity_samples() -> None:
    pool = SamplePool(5)
    for start in (0, 3, 6):
        pool.add(*_batch(start, 3))
    assert len(pool) == 5
    torch.manual_seed(0)
    x, logits, fragile = pool.sample(200)
    seen = set(x[:, 0, 0, 0].tolist())
    assert seen == {4.0, 5.0, 6.0, 7.0, 8.0}  # 0..3 were overwritten
    assert torch.equal(x[:, 0, 0, 0], logits[:, 0]) and bool(fragile.all())


def test_fragile_only_never_returns_a_robust_sample() -> None:
    pool = SamplePool(64)
    x, logits = _batch(0, 32)
    fragile = torch.arange(32) % 4 == 0
    pool.add(x, logits, fragile)
    torch.manual_seed(1)
    xs, _, flags = pool.sample(500, fragile_only=True)
    assert bool(flags.all()) and set(xs[:, 0, 0, 0].long().tolist()) == set(range(0, 32, 4))
    assert pool.count(fragile_only=True) == 8
    robust_only = SamplePool(4)
    robust_only.add(*_batch(0, 2), fragile=torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="no fragile"):
        robust_only.sample(1, fragile_only=True)


def test_pool_state_round_trip_draws_identically() -> None:
    pool = SamplePool(7)
    for start in (0, 4, 8):  # wraps around: the write head is mid-ring
        pool.add(*_batch(start, 4), fragile=torch.tensor([True, False, True, True]))
    clone = SamplePool(7)
    clone.load_state(pool.state())
    torch.manual_seed(3)
    a = pool.sample(50)
    pool.add(*_batch(100, 3))
    a2 = pool.sample(50)
    torch.manual_seed(3)
    b = clone.sample(50)
    clone.add(*_batch(100, 3))
    b2 = clone.sample(50)
    for u, v in zip((*a, *a2), (*b, *b2)):
        assert torch.equal(u, v)
    assert SamplePool(3).state() == {}


def test_paired_difference_matches_a_hand_computed_t_interval() -> None:
    a = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.40, 4: 0.45}
    b = {0: 0.60, 1: 0.65, 2: 0.70, 3: 0.50, 4: 0.50, 9: 0.99}  # seed 9 has no partner: ignored
    d = paired_difference(a, b)
    assert d is not None and d.n == 5 and d.seeds == [0, 1, 2, 3, 4]
    # diffs 0.10 0.05 0.15 0.10 0.05: mean 0.09, sd 0.0418330, t(0.975, 4) = 2.7764451
    assert d.mean == pytest.approx(0.09)
    assert d.sd == pytest.approx(0.0418330, abs=1e-6)
    half = 2.7764451 * 0.0418330 / 5**0.5
    assert d.ci_low == pytest.approx(0.09 - half, abs=1e-6) and d.ci_high == pytest.approx(0.09 + half, abs=1e-6)
    assert d.excludes_zero
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
    single = paired_difference({0: 0.2}, {0: 0.5})
    assert single is not None and single.ci_low is None and not single.excludes_zero
