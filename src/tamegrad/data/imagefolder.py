"""Image classification data from ``root/{train,test}/<class>/<image>`` folders or ``.tar.gz``.

(``cifar10-jpeg``, the named CIFAR-10 set in this layout, is in :mod:`tamegrad.data.cifar_jpeg`.)

The images are decoded once with Pillow (converted to RGB) and the result is cached as a single
``.pt`` file in :func:`default_cache_dir`, keyed by the source's absolute path, size and mtime
(for a folder: a hash over its sorted file list with sizes and mtimes), so later loads only
read that file.

Limits: every image must have the same size (nothing is resized or cropped); everything is
held in memory (archives are decompressed in memory while decoding, so the archive and the
decoded images must fit in RAM); only RGB output (grey or RGBA images are converted); class
folders may nest images in sub-folders but the class is always the first folder below
``train``/``test``; both splits must hold the same classes (a class missing from one is
refused, which is how an archive cut short at a file boundary shows). A cache
keyed by mtime cannot notice a file changed in place with its size and mtime preserved.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing as mp
import os
import tarfile
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from tamegrad._atomic import atomic_write

from .base import (
    Dataset,
    DatasetCorruptError,
    DatasetNotFoundError,
    channel_stats,
    default_cache_dir,
)

__all__ = ["IMAGE_EXTENSIONS", "imagefolder"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".webp", ".tif", ".tiff"}
)
_SPLITS = ("train", "test")
_CACHE_VERSION = 1
_CHUNK = 1000  # images per decoding task; below 2 chunks everything is decoded in-process

Payload = bytes | str  # encoded image bytes (from an archive) or a file path


# ----------------------------------------------------------------------------- listing
def _is_image(parts: Sequence[str]) -> bool:
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return PurePosixPath(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS


def _split_class(rel: Sequence[str]) -> tuple[str, str] | None:
    """``("train", "cat")`` for ``train/cat/x.png``; None if not in a split/class folder."""
    if len(rel) >= 3 and rel[0] in _SPLITS:
        return rel[0], rel[1]
    return None


_PLAIN_TAR_TYPES = frozenset({b"0", b"\0", b"5"})  # regular file, old-style file, directory


def _plain_tar_files(buf: bytes) -> list[tuple[str, int, int]] | None:
    """``(name, data offset, size)`` of the files of an uncompressed plain ustar/GNU tar.

    A fast path (tarfile spends ~35 us per member): returns None as soon as the archive uses
    anything it does not handle (pax or GNU long-name headers, links, base-256 sizes, bad
    header checksums, non-UTF-8 names, truncation), and the caller then uses ``tarfile``.
    """
    out: list[tuple[str, int, int]] = []
    off, n = 0, len(buf)
    while off + 512 <= n:
        hdr = buf[off : off + 512]
        if hdr.count(0) == 512:
            break
        kind = hdr[156:157]
        if kind not in _PLAIN_TAR_TYPES or hdr[124] & 0x80:
            return None
        try:
            size = int(hdr[124:136].strip(b"\0 ") or b"0", 8)
            checksum = int(hdr[148:156].strip(b"\0 ") or b"0", 8)
            name = hdr[:100].split(b"\0", 1)[0].decode("utf-8")
            if hdr[257:263] == b"ustar\0":  # POSIX ustar: long paths are split into a prefix
                prefix = hdr[345:500].split(b"\0", 1)[0].decode("utf-8")
                name = f"{prefix}/{name}" if prefix else name
        except (ValueError, UnicodeDecodeError):
            return None
        if checksum != 256 + sum(hdr[:148]) + sum(hdr[156:]):
            return None
        off += 512
        if kind != b"5":
            if off + size > n:
                return None
            out.append((name, off, size))
        off += -(-size // 512) * 512
    return out


def _tarfile_files(buf: bytes) -> list[tuple[str, int, int]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(buf), mode="r:") as tf:
        for m in tf:
            if m.isfile():
                if m.offset_data + m.size > len(buf):
                    raise tarfile.ReadError(f"member {m.name} is truncated")
                out.append((m.name, m.offset_data, m.size))
    return out


def _list_archive(path: Path) -> list[tuple[tuple[str, ...], Payload]]:
    """All image files of a (gzipped) tar archive as (path parts, bytes), in archive order."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip: inflate in one go, far faster than a tarfile stream
            raw = zlib.decompress(raw, wbits=47)
        members = _plain_tar_files(raw)
        if members is None:
            members = _tarfile_files(raw)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DatasetCorruptError(f"{path} is corrupt or not a (gzipped) tar archive: {e}") from e
    files: list[tuple[tuple[str, ...], Payload]] = []
    view = memoryview(raw)
    for name, offset, size in members:
        parts = tuple(p for p in PurePosixPath(name).parts if p not in (".", "/"))
        if parts and ".." not in parts and _is_image(parts):
            files.append((parts, bytes(view[offset : offset + size])))
    return files


def _list_folder(root: Path) -> list[tuple[tuple[str, ...], Payload]]:
    files: list[tuple[tuple[str, ...], Payload]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root).parts
        for f in sorted(filenames):
            parts = (*rel_dir, f)
            if _is_image(parts):
                files.append((parts, os.path.join(dirpath, f)))
    return files


def _strip_wrapper(
    files: list[tuple[tuple[str, ...], Payload]], source: Path
) -> list[tuple[str, str, str, Payload]]:
    """Find ``train``/``test`` at the top or inside one wrapping folder; -> (split, class, name,
    payload) for every image inside a split/class folder."""
    if not any(p[0] in _SPLITS and len(p) >= 3 for p, _ in files):
        wrappers = sorted({p[0] for p, _ in files if len(p) >= 4 and p[1] in _SPLITS})
        if len(wrappers) > 1:
            raise ValueError(
                f"{source}: train/ and test/ appear inside several top-level folders "
                f"({', '.join(wrappers)}); expected them at the top or inside exactly one folder"
            )
        if not wrappers:
            raise DatasetNotFoundError(
                f"{source}: no images found in train/<class>/ (expected the layout "
                "train/<class>/<image> and test/<class>/<image>, optionally inside one "
                "top-level folder)"
            )
        files = [(p[1:], x) for p, x in files if p[0] == wrappers[0]]
    out = []
    for parts, payload in files:
        sc = _split_class(parts)
        if sc is not None:
            out.append((sc[0], sc[1], "/".join(parts), payload))
    return out


# ----------------------------------------------------------------------------- decoding
def _decode_one(name: str, payload: Payload) -> np.ndarray:
    try:
        src = io.BytesIO(payload) if isinstance(payload, bytes) else payload
        with Image.open(src) as im:
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            return np.asarray(rgb)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetCorruptError(f"cannot decode image {name}: {e}") from e


def _decode_chunk(task: tuple[list[tuple[str, Payload]], tuple[int, int], str]) -> np.ndarray:
    """Decode a list of images into one uint8 (k, H, W, 3) array (runs in worker processes)."""
    items, (h, w), first = task
    out = np.empty((len(items), h, w, 3), dtype=np.uint8)
    for i, (name, payload) in enumerate(items):
        a = _decode_one(name, payload)
        if a.shape != (h, w, 3):
            raise ValueError(
                f"all images must have the same size: {name} is {a.shape[1]}x{a.shape[0]} "
                f"(WxH) but {first} is {w}x{h}; resize them first"
            )
        out[i] = a
    return out


def _decode_all(items: list[tuple[str, Payload]], workers: int) -> np.ndarray:
    first = _decode_one(*items[0])
    h, w = first.shape[:2]
    tasks = [(items[i : i + _CHUNK], (h, w), items[0][0]) for i in range(0, len(items), _CHUNK)]
    if workers <= 1 or len(tasks) < 2:
        parts = [_decode_chunk(t) for t in tasks]
    else:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else None)
        with ctx.Pool(min(workers, len(tasks))) as pool:
            parts = pool.map(_decode_chunk, tasks, chunksize=1)
    return np.concatenate(parts)


# ----------------------------------------------------------------------------- caching
def _source_key(source: Path) -> str:
    h = hashlib.sha256(f"tamegrad-imagefolder-v{_CACHE_VERSION}|{source}".encode())
    if source.is_file():
        st = source.stat()
        h.update(f"|file|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for f in sorted(filenames):
                p = os.path.join(dirpath, f)
                st = os.stat(p)
                h.update(f"|{os.path.relpath(p, source)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _read_cache(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        c = torch.load(path, map_location="cpu", weights_only=True)
        ok = (
            isinstance(c, dict)
            and c.get("key") == key
            and all(isinstance(c.get(k), torch.Tensor) for k in ("train_x", "train_y", "test_x"))
            and isinstance(c.get("test_y"), torch.Tensor)
            and c["train_x"].dtype == torch.uint8
            and c["train_x"].ndim == 4
            and c["test_x"].ndim == 4
            and c["train_x"].shape[0] == c["train_y"].shape[0]
            and c["test_x"].shape[0] == c["test_y"].shape[0]
            and isinstance(c.get("classes"), list)
            and len(c["mean"]) == len(c["std"]) == c["train_x"].shape[1]
        )
    except Exception as e:  # any unreadable cache is just rebuilt
        warnings.warn(f"ignoring unreadable image cache {path} ({e}); rebuilding it", stacklevel=3)
        return None
    if not ok:
        warnings.warn(f"ignoring invalid image cache {path}; rebuilding it", stacklevel=3)
        return None
    return c  # type: ignore[no-any-return]


def _write_cache(path: Path, content: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(content, f))
    except OSError as e:
        warnings.warn(f"could not write image cache {path} ({e}); continuing without", stacklevel=3)


def _check_test_classes(source: Path, content: dict[str, Any]) -> None:
    """Every training class must have test images (run on fresh and cached content alike)."""
    classes = content["classes"]
    counts = torch.bincount(content["test_y"], minlength=len(classes)).tolist()
    untested = [str(c) for c, n in zip(classes, counts) if n == 0]
    if untested:
        raise DatasetCorruptError(
            f"{source}: test/ has no images of {', '.join(untested)}, which train/ has: "
            "the archive or folder is incomplete (e.g. a copy cut short at a file boundary, "
            "which a tar reader cannot tell from a complete one); accuracy on the remaining "
            "classes would be reported as if it were the whole test set"
        )


def _build(source: Path, workers: int) -> dict[str, Any]:
    files = _list_archive(source) if source.is_file() else _list_folder(source)
    entries = _strip_wrapper(files, source)
    entries.sort(key=lambda e: (_SPLITS.index(e[0]), e[1], e[2]))
    classes = sorted({c for s, c, _, _ in entries if s == "train"})
    if not classes:
        raise DatasetNotFoundError(f"{source}: no training images found under train/<class>/")
    extra = sorted({c for s, c, _, _ in entries if s == "test"} - set(classes))
    if extra:
        raise ValueError(f"{source}: test/ has classes missing from train/: {', '.join(extra)}")
    if not any(s == "test" for s, *_ in entries):
        raise DatasetNotFoundError(f"{source}: no test images found under test/<class>/")
    index = {c: i for i, c in enumerate(classes)}
    pixels = _decode_all([(name, payload) for _, _, name, payload in entries], workers)
    y = torch.tensor([index[c] for _, c, _, _ in entries], dtype=torch.int64)
    n_train = sum(1 for s, *_ in entries if s == "train")
    train_x = torch.from_numpy(pixels[:n_train]).permute(0, 3, 1, 2).contiguous()
    test_x = torch.from_numpy(pixels[n_train:]).permute(0, 3, 1, 2).contiguous()
    del pixels
    mean, std = channel_stats(train_x)
    return {
        "train_x": train_x,
        "train_y": y[:n_train].clone(),
        "test_x": test_x,
        "test_y": y[n_train:].clone(),
        "classes": classes,
        "mean": list(mean),
        "std": list(std),
    }


def imagefolder(
    source: str | Path,
    *,
    name: str = "imagefolder",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    workers: int = 2,
    cache: bool = True,
) -> Dataset:
    """Load ``source/{train,test}/<class>/<image>`` (a folder, or a tar / tar.gz of one).

    ``train`` and ``test`` may sit at the top of ``source`` or inside one wrapping folder.
    Classes are the sorted names of the class folders under ``train``. Images are decoded
    (RGB, uint8 ``(N, 3, H, W)``) with ``workers`` processes and cached (``cache=False``
    skips reading and writing the cache). ``mean``/``std`` default to the per-channel values
    of the training images, computed when the cache is built.

    Raises :class:`DatasetNotFoundError` when ``source`` or its images are missing,
    :class:`DatasetCorruptError` for a damaged archive or image, ``ValueError`` when images
    differ in size. A cache that cannot be read is ignored (with a warning) and rebuilt.
    """
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise DatasetNotFoundError(
            f"{source} does not exist: imagefolder needs a folder holding train/<class>/<image> "
            "and test/<class>/<image>, or a .tar.gz of such a folder (pass it as data_dir)"
        )
    content: dict[str, Any] | None = None
    cache_path: Path | None = None
    key = ""
    if cache:
        key = _source_key(source)
        cache_path = default_cache_dir() / f"imagefolder-{key[:32]}.pt"
        content = _read_cache(cache_path, key)
    if content is None:
        content = _build(source, workers)
        _check_test_classes(source, content)  # before a cache could keep it
        if cache_path is not None:
            meta = {"key": key, "source": str(source), "version": _CACHE_VERSION}
            _write_cache(cache_path, {**content, **meta})
    else:  # a cache written before this check existed
        _check_test_classes(source, content)
    classes = [str(c) for c in content["classes"]]
    m = tuple(float(v) for v in (mean if mean is not None else content["mean"]))
    s = tuple(float(v) for v in (std if std is not None else content["std"]))
    channels = content["train_x"].shape[1]
    if len(m) != channels or len(s) != channels:
        raise ValueError(f"mean/std need {channels} values (one per channel), got {m} / {s}")
    return Dataset(
        name=name,
        kind="image",
        train_x=content["train_x"],
        train_y=content["train_y"],
        test_x=content["test_x"],
        test_y=content["test_y"],
        num_classes=len(classes),
        classes=classes,
        mean=m,
        std=s,
    )
