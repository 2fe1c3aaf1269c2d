"""Where each file-backed dataset comes from, how to check it, and how to fetch it.

``atesc data list`` reports, for every file-backed domain, whether its files are present under
``data.root`` and whether they match the published release. ``atesc data fetch NAME`` downloads
the release, verifies it, and only then moves the files into place.

Checksums: SHA-256 of the files as published (MNIST, SVHN) or of the published archive
(CIFAR-10 binary, STL-10 binary). The LIBSVM site publishes no checksum for USPS; the MD5 that
torchvision and others pin is the one used there. Files extracted from an archive are verified
through a manifest (``ATESC-SHA256SUMS``) that ``fetch`` writes after checking the archive:
each extracted file's SHA-256, plus the archive's. A file that no longer matches its manifest is
refused by the readers too (a truncated or edited file would otherwise train silently).

Fetching is all-or-nothing: downloads go to a staging folder inside ``root``; nothing reaches the
final paths until every download matched its checksum; each file is moved in by an atomic
rename and the manifest is written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import BadInput
from core.rundir.safefile import write_atomic

MANIFEST = "ATESC-SHA256SUMS"
MIRROR_ENV = "ATESC_DATA_MIRROR"  # base URL replacing each download's own (mirrors, tests)
CHUNK = 1 << 20


@dataclass(frozen=True)
class Download:
    """One published file. ``members``: for an archive, the members to keep (path -> installed path)."""

    url: str
    sha256: str | None = None
    md5: str | None = None  # only where no SHA-256 is published
    size: int | None = None
    members: dict[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetSource:
    """A file-backed domain's release: the files its reader needs (relative to root) and their origin."""

    domain: str
    homepage: str
    files: tuple[str, ...]
    downloads: tuple[Download, ...]
    # Published digests of files as they sit on disk (the reader also accepts these alternatives).
    known: dict[str, dict[str, str]] = field(default_factory=dict)
    alternatives: dict[str, str] = field(default_factory=dict)  # file -> accepted alternative name


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # the yann.lecun.com page no longer serves files
_MNIST_SHA = {  # (gzip as published, decompressed IDX)
    "train-images-idx3-ubyte": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}  # fmt: skip
_USPS = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"
_CIFAR_MEMBERS = [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)] + ["cifar-10-batches-bin/test_batch.bin"]
_STL_MEMBERS = [f"stl10_binary/{p}_{k}.bin" for p in ("train", "test") for k in ("X", "y")]

SOURCES: dict[str, DatasetSource] = {
    s.domain: s
    for s in (
        DatasetSource(
            "mnist-full", "http://yann.lecun.com/exdb/mnist/",
            files=tuple(f"mnist/{n}.gz" for n in _MNIST_SHA),
            downloads=tuple(Download(_MNIST + n + ".gz", sha256=gz) for n, (gz, _) in _MNIST_SHA.items()),
            known={**{f"mnist/{n}.gz": {"sha256": gz} for n, (gz, _) in _MNIST_SHA.items()},
                   **{f"mnist/{n}": {"sha256": raw} for n, (_, raw) in _MNIST_SHA.items()}},
            alternatives={f"mnist/{n}.gz": f"mnist/{n}" for n in _MNIST_SHA},
        ),
        DatasetSource(
            "usps", "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps",
            files=("usps/usps.bz2", "usps/usps.t.bz2"),
            downloads=(Download(_USPS + "usps.bz2", md5="ec16c51db3855ca6c91edd34d0e9b197"),
                       Download(_USPS + "usps.t.bz2", md5="8ea070ee2aca1ac39742fdd1ef5ed118")),
            known={"usps/usps.bz2": {"md5": "ec16c51db3855ca6c91edd34d0e9b197"},
                   "usps/usps.t.bz2": {"md5": "8ea070ee2aca1ac39742fdd1ef5ed118"}},
        ),
        DatasetSource(
            "svhn", "http://ufldl.stanford.edu/housenumbers/",
            files=("svhn/train_32x32.mat", "svhn/test_32x32.mat"),
            downloads=(
                Download(_SVHN + "train_32x32.mat", size=182040794,
                         sha256="435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8"),
                Download(_SVHN + "test_32x32.mat", size=64275384,
                         sha256="cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b"),
            ),
            known={"svhn/train_32x32.mat": {"sha256": "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8"},
                   "svhn/test_32x32.mat": {"sha256": "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b"}},
        ),
        DatasetSource(
            "cifar10", "https://www.cs.toronto.edu/~kriz/cifar.html",
            files=tuple(_CIFAR_MEMBERS),
            downloads=(Download("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", size=170052171,
                                sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                                members={m: m for m in _CIFAR_MEMBERS}),),
        ),
        DatasetSource(
            "stl10", "https://cs.stanford.edu/~acoates/stl10/",
            files=tuple(_STL_MEMBERS),
            downloads=(Download("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", size=2640397119,
                                sha256="f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866",
                                members={m: m for m in _STL_MEMBERS}),),
        ),
    )
}  # fmt: skip


def get_source(name: str) -> DatasetSource:
    if name not in SOURCES:
        raise BadInput(f"no download for {name!r} (file-backed datasets: {', '.join(SOURCES)})", where="atesc data fetch")
    return SOURCES[name]


# ---------------------------------------------------------------- checking


def file_digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _manifest_dirs(src: DatasetSource) -> list[str]:
    return sorted({f.split("/", 1)[0] for f in src.files})


def read_manifest(root: Path, src: DatasetSource) -> dict[str, str]:
    """``{relative file: sha256}`` from the manifests ``fetch`` wrote (empty when there is none)."""
    out: dict[str, str] = {}
    for folder in _manifest_dirs(src):
        path = root / folder / MANIFEST
        if not path.is_file():
            continue
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))["files"]
            out.update({str(k): str(v) for k, v in entries.items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise BadInput("unreadable manifest; delete it and run `atesc data fetch` again", where=str(path)) from None
    return out


@dataclass
class DatasetStatus:
    domain: str
    location: str
    state: str  # missing | partial | present | verified | mismatch
    detail: str = ""
    files: dict[str, str] = field(default_factory=dict)  # relative file -> ok | missing | unverified | mismatch


def _on_disk(root: Path, src: DatasetSource, rel: str) -> str | None:
    """The path (relative) the reader will use for ``rel``: itself or its accepted alternative."""
    for cand in (rel, src.alternatives.get(rel)):
        if cand and (root / cand).is_file():
            return cand
    return None


def check(root: Path, src: DatasetSource) -> DatasetStatus:
    """Present? Matching the published checksums (or the manifest of a verified archive)?"""
    manifest = read_manifest(root, src)
    files: dict[str, str] = {}
    for rel in src.files:
        found = _on_disk(root, src, rel)
        if found is None:
            files[rel] = "missing"
            continue
        expected = dict(src.known.get(found, {}))
        if found in manifest:
            expected.setdefault("sha256", manifest[found])
        if not expected:
            files[found] = "unverified"
            continue
        ok = all(file_digest(root / found, algo) == digest for algo, digest in expected.items())
        files[found] = "ok" if ok else "mismatch"
    states = set(files.values())
    location = ", ".join(str(root / d) for d in _manifest_dirs(src))
    if "mismatch" in states:
        bad = [f for f, s in files.items() if s == "mismatch"]
        return DatasetStatus(src.domain, location, "mismatch", f"checksum mismatch: {', '.join(bad)}", files)
    if states == {"missing"}:
        return DatasetStatus(src.domain, location, "missing", f"run `atesc data fetch {src.domain}`", files)
    if "missing" in states:
        n = sum(s == "missing" for s in states)
        return DatasetStatus(src.domain, location, "partial", f"{n} file(s) missing", files)
    if "unverified" in states:
        return DatasetStatus(src.domain, location, "present", "no checksum for these files (not fetched by atesc)", files)
    return DatasetStatus(src.domain, location, "verified", "", files)


def refuse_tampered(root: Path, domain: str) -> None:
    """Readers call this before building: a file that contradicts its manifest is refused."""
    src = SOURCES.get(domain)
    if src is None:
        return
    manifest = read_manifest(root, src)
    for rel, digest in manifest.items():
        path = root / rel
        if path.is_file() and file_digest(path) != digest:
            raise BadInput(f"SHA-256 does not match {MANIFEST} written when it was fetched; "
                           f"fetch it again with `atesc data fetch {domain}`", where=str(path))


# ---------------------------------------------------------------- fetching


def _url(dl: Download) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    return mirror.rstrip("/") + "/" + dl.filename if mirror else dl.url


def _download(url: str, dest: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:  # noqa: S310 - fixed URLs
            shutil.copyfileobj(resp, out, CHUNK)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise BadInput(f"cannot download ({reason}); no network? Place the files by hand "
                       "(`atesc data list` shows where) or set ATESC_DATA_MIRROR", where=url) from None


def _verify_download(url: str, path: Path, dl: Download) -> str:
    """SHA-256 of the download; raises when it contradicts the published size or digest."""
    size = path.stat().st_size
    if dl.size is not None and size != dl.size:
        raise BadInput(f"size {size} bytes, published {dl.size}; nothing installed", where=url)
    sha = file_digest(path)
    if dl.sha256 is not None and sha != dl.sha256:
        raise BadInput(f"SHA-256 mismatch (got {sha}, published {dl.sha256}); nothing installed", where=url)
    if dl.md5 is not None and file_digest(path, "md5") != dl.md5:
        raise BadInput(f"MD5 mismatch (published {dl.md5}); nothing installed", where=url)
    return sha


def _extract(archive: Path, members: dict[str, str], staging: Path, url: str) -> None:
    """Copy only the named regular-file members (no links, no paths outside ``staging``)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for name, target in members.items():
                try:
                    info = tar.getmember(name)
                except KeyError:
                    raise BadInput(f"archive has no member {name}; nothing installed", where=url) from None
                if not info.isreg():
                    raise BadInput(f"archive member {name} is not a regular file; nothing installed", where=url)
                src = tar.extractfile(info)
                assert src is not None  # regular members always have a file object
                out = staging / target
                out.parent.mkdir(parents=True, exist_ok=True)
                with src, open(out, "wb") as f:
                    shutil.copyfileobj(src, f, CHUNK)
    except tarfile.TarError as exc:
        raise BadInput(f"not a readable archive ({exc}); nothing installed", where=url) from None


def fetch(name: str, root: Path, *, timeout: float = 30.0, log: Callable[[str], None] | None = None) -> DatasetStatus:
    """Download, verify and install ``name`` under ``root``. Returns the status after installing.

    Already verified: nothing is downloaded. Any failure (no network, checksum mismatch, bad
    archive) raises ``BadInput`` and leaves ``root`` as it was.
    """
    src = get_source(name)
    status = check(root, src)
    if status.state == "verified":
        return status
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=root))
    try:
        installed: dict[str, str] = {}  # relative path -> sha256 of the staged file
        archives: dict[str, str] = {}
        for dl in src.downloads:
            url = _url(dl)
            if log is not None:
                log(f"downloading {url}")
            blob = staging / ("download-" + dl.filename)
            _download(url, blob, timeout)
            sha = _verify_download(url, blob, dl)
            if dl.members:
                _extract(blob, dl.members, staging / "files", url)
                archives[dl.filename] = sha
                blob.unlink()
                for target in dl.members.values():
                    installed[target] = file_digest(staging / "files" / target)
            else:
                target = next(f for f in src.files if f.rsplit("/", 1)[-1] == dl.filename)
                (staging / "files" / target).parent.mkdir(parents=True, exist_ok=True)
                os.replace(blob, staging / "files" / target)
                installed[target] = sha
        for rel in installed:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / "files" / rel, root / rel)
        for folder in _manifest_dirs(src):
            entries = {rel: d for rel, d in installed.items() if rel.split("/", 1)[0] == folder}
            body = json.dumps({"domain": name, "archives": archives, "files": entries}, indent=2, sort_keys=True)
            write_atomic(root / folder / MANIFEST, body.encode())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return check(root, src)
