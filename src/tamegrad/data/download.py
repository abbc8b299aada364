"""Downloading, checksum verification and safe extraction of data set files.

What this cannot do: resume a partial download, use proxies or credentials beyond what
``urllib`` picks up from the environment, or verify files for which no checksum is known.
Tests never reach the network: they replace :func:`open_url`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .base import DatasetCorruptError, DatasetNotFoundError

__all__ = [
    "CIFAR10_RESOURCE",
    "CIFAR100_RESOURCE",
    "TINYSHAKESPEARE_RESOURCE",
    "Resource",
    "ensure_file",
    "fetch",
    "file_digest",
    "open_url",
    "safe_extract",
    "verify",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One downloadable file: where it comes from, its file name and its checksum(s)."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None

    def checksum_text(self) -> str:
        parts = []
        if self.md5:
            parts.append(f"md5 {self.md5}")
        if self.sha256:
            parts.append(f"sha256 {self.sha256}")
        return ", ".join(parts) if parts else "no checksum known"


CIFAR10_RESOURCE = Resource(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)
CIFAR100_RESOURCE = Resource(
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    filename="cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
)
TINYSHAKESPEARE_RESOURCE = Resource(
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    filename="tinyshakespeare.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)


def open_url(url: str, timeout: float = 60.0) -> BinaryIO:
    """Open ``url`` for reading (the one place that touches the network; tests replace it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "tamegrad"})
    return urllib.request.urlopen(request, timeout=timeout)  # type: ignore[no-any-return]


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, resource: Resource) -> None:
    """Raise :class:`DatasetCorruptError` if ``path`` does not match ``resource``'s checksums."""
    for algorithm in ("md5", "sha256"):
        expected = getattr(resource, algorithm)
        if not expected:
            continue
        got = file_digest(path, algorithm)
        if got != expected:
            raise DatasetCorruptError(
                f"{path} is corrupt or incomplete: {algorithm} {got}, expected {expected}. "
                f"Delete it and download it again from {resource.url}"
            )


def fetch(resource: Resource, dest: Path, *, timeout: float = 60.0) -> Path:
    """Download ``resource`` to ``dest``, verify its checksum, and move it into place atomically.

    The data goes to a temporary file beside ``dest`` that is renamed over ``dest`` only once
    the checksum matches, so an interrupted or corrupt download never leaves a file at
    ``dest``. Network failures raise :class:`DatasetNotFoundError` (saying where to put the file
    by hand); a checksum mismatch raises :class:`DatasetCorruptError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        hashes = {a: hashlib.new(a) for a in ("md5", "sha256") if getattr(resource, a)}
        try:
            with os.fdopen(fd, "wb") as out, open_url(resource.url, timeout=timeout) as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise DatasetNotFoundError(
                f"Could not download {resource.url} ({e}). Without network access, download it "
                f"elsewhere and put it at {dest} ({resource.checksum_text()})"
            ) from e
        for algorithm, h in hashes.items():
            expected = getattr(resource, algorithm)
            if h.hexdigest() != expected:
                raise DatasetCorruptError(
                    f"Download of {resource.url} is corrupt: {algorithm} {h.hexdigest()}, "
                    f"expected {expected}; nothing was written to {dest}"
                )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def ensure_file(resource: Resource, dest: Path, *, download_ok: bool, what: str) -> Path:
    """Return ``dest`` if it exists, else download it (when allowed).

    Raises :class:`DatasetNotFoundError` naming ``dest`` and the URL when the file is missing
    and ``download_ok`` is False or the download fails. An existing file is not re-verified
    here (callers verify archives before extracting them).
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    if not download_ok:
        raise DatasetNotFoundError(
            f"{what}: {dest} does not exist and download=False. Download {resource.url} and "
            f"put it at {dest} ({resource.checksum_text()}), or pass download=True"
        )
    return fetch(resource, dest)


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    name = member.name
    target = (root / name).resolve()
    if os.path.isabs(name) or ".." in Path(name).parts or not target.is_relative_to(root):
        raise DatasetCorruptError(f"unsafe path in archive: {name!r} (outside the target folder)")
    if member.issym() or member.islnk():
        raise DatasetCorruptError(f"archive contains a link, which is not allowed: {name!r}")
    if not (member.isfile() or member.isdir()):
        raise DatasetCorruptError(f"archive contains a special file, not allowed: {name!r}")


def safe_extract(archive: Path, dest: Path, *, expect: str) -> Path:
    """Extract the tar archive ``archive`` into ``dest`` and return ``dest / expect``.

    Refuses members with absolute paths, ``..``, links or device files (and uses tarfile's
    ``"data"`` filter where the Python version has it). Extraction happens in a temporary
    folder inside ``dest``; the top-level entry ``expect`` is then renamed into place, so a
    half-extracted archive never looks complete. Raises :class:`DatasetCorruptError` when
    the archive is damaged or does not contain ``expect``.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / expect
    tmp_root = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        root = tmp_root.resolve()
        try:
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(m, root)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(root, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(root, members=members)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DatasetCorruptError(
                f"{archive} is corrupt or not a tar archive ({e}). Delete it and get it again."
            ) from e
        extracted = root / expect
        if not extracted.exists():
            raise DatasetCorruptError(f"{archive} does not contain the expected folder {expect!r}")
        if final.is_dir():
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        os.replace(extracted, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final
