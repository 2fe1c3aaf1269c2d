"""Full datasets read from local files in their standard (non-pickle) formats under ``root``.

Expected layouts (the names the datasets' own archives unpack to):
  mnist-full  root/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]  (or root/MNIST/raw)
  usps        root/usps/usps.bz2, usps.t.bz2                                 (LIBSVM format)
  svhn        root/svhn/train_32x32.mat, test_32x32.mat                      (scipy.io.loadmat)
  cifar10     root/cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin
  stl10       root/stl10_binary/{train,test}_{X,y}.bin  (96x96 -> 32x32 by 3x3 area average)
CIFAR-10's python batches are pickles, so only the binary release is read. STL-10 labels are
its own class order (1..10 -> 0..9); mapping classes between CIFAR and STL is the caller's job.
"""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.data.domain import Split, fit_like_mnist, grey_to_rgb, pad_to, to_uint8
from core.data.registry import register_domain
from core.errors import BadInput


def _find(root: Path, dataset: str, candidates: list[Path]) -> Path:
    """The first existing candidate, or a one-line BadInput naming the expected path."""
    for c in candidates:
        if c.is_file():
            return c
    raise BadInput(f"{dataset}: expected file {candidates[0]} not found (place the dataset files under {root})")


def _open(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _idx(data: bytes) -> np.ndarray:
    """IDX format: 2 zero bytes, type code 0x08 (uint8), ndim, big-endian int32 dims, data."""
    if data[:3] != b"\x00\x00\x08":
        raise BadInput("not an uint8 IDX file")
    ndim = data[3]
    dims = np.frombuffer(data, ">i4", count=ndim, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@register_domain("mnist-full", offline=False, description="full MNIST from IDX files under root/mnist")
def build_mnist_full(root: Path, seed: int) -> Split:
    out = []
    for part in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            base = f"{part}-{kind}-ubyte"
            cands = [d / (base + ext) for d in (root / "mnist", root / "MNIST" / "raw") for ext in ("", ".gz")]
            out.append(_idx(_open(_find(root, "mnist-full", cands))))
    tx, ty, vx, vy = out
    rgb = lambda a: grey_to_rgb(pad_to(torch.from_numpy(a.copy())))  # noqa: E731
    return rgb(tx), torch.from_numpy(ty.astype(np.int64)), rgb(vx), torch.from_numpy(vy.astype(np.int64))


def _libsvm_usps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """LIBSVM lines 'label idx:value ...', labels 1..10, 256 values in [-1, 1] (16x16)."""
    xs, ys = [], []
    for line in bz2.decompress(path.read_bytes()).decode().splitlines():
        parts = line.split()
        if not parts:
            continue
        row = np.zeros(256, np.float32)
        for kv in parts[1:]:
            k, v = kv.split(":")
            row[int(k) - 1] = float(v)
        xs.append(row)
        ys.append(int(float(parts[0])) - 1)
    return np.stack(xs).reshape(-1, 16, 16), np.asarray(ys, np.int64)


@register_domain("usps", offline=False, description="USPS 16x16 digits from LIBSVM files under root/usps")
def build_usps(root: Path, seed: int) -> Split:
    out: list[torch.Tensor] = []
    for fname in ("usps.bz2", "usps.t.bz2"):
        x, y = _libsvm_usps(_find(root, "usps", [root / "usps" / fname]))
        img = (torch.from_numpy(x).unsqueeze(1) + 1.0) / 2.0
        out += [to_uint8(grey_to_rgb(fit_like_mnist(img))), torch.from_numpy(y)]
    return out[0], out[1], out[2], out[3]


@register_domain("svhn", offline=False, description="SVHN cropped digits from .mat files under root/svhn")
def build_svhn(root: Path, seed: int) -> Split:
    from scipy.io import loadmat  # MAT v5 reader: plain arrays, no pickle

    out: list[torch.Tensor] = []
    for fname in ("train_32x32.mat", "test_32x32.mat"):
        m = loadmat(_find(root, "svhn", [root / "svhn" / fname]))
        x = torch.from_numpy(np.ascontiguousarray(m["X"].transpose(3, 2, 0, 1)))  # (32,32,3,N) -> NCHW
        y = m["y"].reshape(-1).astype(np.int64) % 10  # SVHN labels digit 0 as 10
        out += [x.to(torch.uint8), torch.from_numpy(y)]
    return out[0], out[1], out[2], out[3]


def _cifar_records(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 binary: records of 1 label byte + 3072 bytes (R, G, B planes of 32x32)."""
    raw = np.concatenate([np.frombuffer(p.read_bytes(), np.uint8).reshape(-1, 3073) for p in paths])
    x = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy())
    return x, torch.from_numpy(raw[:, 0].astype(np.int64))


@register_domain("cifar10", offline=False, description="CIFAR-10 binary release under root/cifar-10-batches-bin")
def build_cifar10(root: Path, seed: int) -> Split:
    d = root / "cifar-10-batches-bin"
    train = [_find(root, "cifar10", [d / f"data_batch_{i}.bin"]) for i in range(1, 6)]
    tx, ty = _cifar_records(train)
    vx, vy = _cifar_records([_find(root, "cifar10", [d / "test_batch.bin"])])
    return tx, ty, vx, vy


def _stl(root: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    d = root / "stl10_binary"
    xb = _find(root, "stl10", [d / f"{part}_X.bin"]).read_bytes()
    yb = _find(root, "stl10", [d / f"{part}_y.bin"]).read_bytes()
    # Images are stored column-major per channel: (N, 3, 96, 96) with H and W swapped.
    x = torch.from_numpy(np.frombuffer(xb, np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())
    x = F.interpolate(x.float() / 255.0, size=(32, 32), mode="area")
    return to_uint8(x), torch.from_numpy(np.frombuffer(yb, np.uint8).astype(np.int64) - 1)


@register_domain("stl10", offline=False, description="STL-10 binary release under root/stl10_binary, 96 -> 32 px")
def build_stl10(root: Path, seed: int) -> Split:
    tx, ty = _stl(root, "train")
    vx, vy = _stl(root, "test")
    return tx, ty, vx, vy
