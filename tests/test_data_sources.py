"""Dataset sources: list, fetch (all-or-nothing, checksums), and the CIFAR-10 <-> STL-10 9-class mapping."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import load_domain
from core import datasets as sources
from core.data import cache
from core.data.classmap import CIFAR10_CLASSES, SHARED_CLASSES, STL10_CLASSES
from core.errors import BadInput

REPO = Path(__file__).resolve().parents[1]


def _cifar_tar(path: Path, labels: list[int]) -> bytes:
    """A CIFAR-10 binary release in miniature: the real member names and record layout."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member in sources.SOURCES["cifar10"].files:
            rec = rng.integers(0, 256, (len(labels), 3073), dtype=np.uint8)
            rec[:, 0] = labels
            data = rec.tobytes()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file:// mirror holding a tiny cifar-10-binary.tar.gz whose digest the source publishes."""
    d = tmp_path / "mirror"
    d.mkdir()
    blob = _cifar_tar(d / "cifar-10-binary.tar.gz", [0, 6, 7, 9])
    dl = dataclasses.replace(sources.SOURCES["cifar10"].downloads[0], size=len(blob),
                             sha256=hashlib.sha256(blob).hexdigest())  # fmt: skip
    monkeypatch.setitem(sources.SOURCES, "cifar10", dataclasses.replace(sources.SOURCES["cifar10"], downloads=(dl,)))
    monkeypatch.setenv(sources.MIRROR_ENV, d.as_uri())
    return d


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_fetch_verifies_installs_and_reader_loads(mirror: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    assert sources.check(root, sources.SOURCES["cifar10"]).state == "missing"
    status = sources.fetch("cifar10", root)
    assert status.state == "verified" and set(status.files.values()) == {"ok"}
    manifest = json.loads((root / "cifar-10-batches-bin" / sources.MANIFEST).read_text())
    assert manifest["archives"] == {"cifar-10-binary.tar.gz": sources.SOURCES["cifar10"].downloads[0].sha256}
    assert not [p for p in root.iterdir() if p.name.startswith(".fetch-")]  # staging removed
    d = load_domain("cifar10", root)
    assert d.train_x.shape == (20, 3, 32, 32) and d.train_y.tolist() == [0, 6, 7, 9] * 5
    # A second fetch of a verified dataset downloads nothing (the mirror could be gone).
    (mirror / "cifar-10-binary.tar.gz").unlink()
    assert sources.fetch("cifar10", root).state == "verified"


def test_checksum_mismatch_refused_nothing_installed(mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = sources.SOURCES["cifar10"]
    bad = dataclasses.replace(src.downloads[0], sha256="0" * 64)
    monkeypatch.setitem(sources.SOURCES, "cifar10", dataclasses.replace(src, downloads=(bad,)))
    root = tmp_path / "data"
    with pytest.raises(BadInput, match="SHA-256 mismatch") as e:
        sources.fetch("cifar10", root)
    assert "\n" not in str(e.value) and "nothing installed" in str(e.value)
    assert _tree(root) == []


def test_tampered_file_refused_by_reader_and_listed(mirror: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    sources.fetch("cifar10", root)
    batch = root / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-3073])  # one record lost
    status = sources.check(root, sources.SOURCES["cifar10"])
    assert status.state == "mismatch" and "data_batch_3.bin" in status.detail
    with pytest.raises(BadInput, match="data_batch_3.bin"):
        load_domain("cifar10", root)


def test_published_digests_checked_for_direct_files(tmp_path: Path) -> None:
    """Files placed by hand under their published names are compared with the published SHA-256."""
    (tmp_path / "svhn").mkdir()
    for f in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / "svhn" / f).write_bytes(b"not the release")
    status = sources.check(tmp_path, sources.SOURCES["svhn"])
    assert status.state == "mismatch" and set(status.files.values()) == {"mismatch"}
    (tmp_path / "svhn" / "test_32x32.mat").unlink()
    assert sources.check(tmp_path, sources.SOURCES["svhn"]).files["svhn/test_32x32.mat"] == "missing"


def _atesc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "atesc_tui.cli", *args], capture_output=True, text=True,
                          env=full, cwd=REPO, timeout=120)  # fmt: skip


def test_cli_list_and_offline_fetch(tmp_path: Path) -> None:
    root = tmp_path / "data"
    listed = _atesc("data", "list", "--root", str(root), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["domain"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows["mnist"]["state"] == "available" and rows["cifar10"]["state"] == "missing"
    assert rows["stl9"]["classes"] == 9 and "stl10" in rows["stl9"]["detail"]
    assert {"mnist-full", "usps", "svhn", "cifar10", "stl10", "cifar9", "stl9"} <= set(rows)
    # No network: a refused connection stands in for it (and keeps CI with a network from downloading).
    fetched = _atesc("data", "fetch", "svhn", "--root", str(root), env={sources.MIRROR_ENV: "http://127.0.0.1:9"})
    assert fetched.returncode == 2
    lines = fetched.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot download" in lines[0]
    assert "Traceback" not in fetched.stderr
    assert [p for p in _tree(root) if not p.startswith("cache")] == []
    unknown = _atesc("data", "fetch", "imagenet", "--root", str(root))
    assert unknown.returncode == 2 and "cifar10" in unknown.stderr


# ---- CIFAR-10 <-> STL-10 on the 9 shared classes ---------------------------------------------


def test_shared_classes_name_the_same_objects() -> None:
    from core.data.classmap import CIFAR10_TO_9, STL10_TO_9

    assert CIFAR10_TO_9[CIFAR10_CLASSES.index("frog")] == -1 and STL10_TO_9[STL10_CLASSES.index("monkey")] == -1
    for classes, mapping in ((CIFAR10_CLASSES, CIFAR10_TO_9), (STL10_CLASSES, STL10_TO_9)):
        kept = [(c, m) for c, m in zip(classes, mapping) if m >= 0]
        assert sorted(m for _, m in kept) == list(range(9))  # a bijection onto the 9 shared labels
        for name, m in kept:
            assert SHARED_CLASSES[m] == {"car": "automobile"}.get(name, name)
    # car (STL 2) and automobile (CIFAR 1) meet; so do bird (STL 1, CIFAR 2) and ship/truck.
    assert STL10_TO_9[2] == CIFAR10_TO_9[1] == 1 and STL10_TO_9[1] == CIFAR10_TO_9[2] == 2
    assert STL10_TO_9[8] == CIFAR10_TO_9[8] == 7 and STL10_TO_9[9] == CIFAR10_TO_9[9] == 8


def test_cifar9_and_stl9_domains(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    c = tmp_path / "cifar-10-batches-bin"
    c.mkdir()
    for f in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (10, 3073), dtype=np.uint8)
        rec[:, 0] = np.arange(10)
        (c / f).write_bytes(rec.tobytes())
    s = tmp_path / "stl10_binary"
    s.mkdir()
    for part in ("train", "test"):
        (s / f"{part}_X.bin").write_bytes(rng.integers(0, 256, (10, 3, 96, 96), dtype=np.uint8).tobytes())
        (s / f"{part}_y.bin").write_bytes(np.arange(1, 11, dtype=np.uint8).tobytes())  # STL labels are 1..10
    full, nine = load_domain("cifar10", tmp_path), load_domain("cifar9", tmp_path)
    assert nine.num_classes == 9 and full.num_classes == 10
    assert nine.train_y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8] * 5  # frog (6) dropped, 7..9 shift down
    keep = full.train_y != 6
    assert torch.equal(nine.train_x, full.train_x[keep])
    stl = load_domain("stl9", tmp_path)
    assert stl.num_classes == 9
    # STL order airplane, bird, car, cat, deer, dog, horse, (monkey), ship, truck -> shared labels
    assert stl.test_y.tolist() == [0, 2, 1, 3, 4, 5, 6, 7, 8]
    assert not cache.cache_path(tmp_path, "cifar9", 0).exists()  # derived, not cached twice
    patched = load_domain("patched:stl9", tmp_path)
    assert patched.num_classes == 9 and patched.test_y.tolist() == stl.test_y.tolist()


def test_presets_say_what_they_need() -> None:
    from atesc_tui.commands import _needs

    presets = REPO / "presets"
    assert _needs(presets / "quickstart.toml") == "nothing (offline, CPU)"
    assert _needs(presets / "paper" / "cifar-stl.toml") == "files: cifar10 stl10, GPU"
    assert _needs(presets / "bench" / "paper-svhn-mnist.toml") == "files: svhn mnist-full, GPU"
    assert _needs(presets / "paper" / "mnist-usps.toml") == "files: mnist-full usps, GPU"
