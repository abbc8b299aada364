"""CIFAR-10 and CIFAR-100 from the official "python version" pickle files.

Layout (inside ``data_dir``): ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
and ``cifar-100-python/{train, test, meta}``. When missing, the official archive is downloaded
(or taken from ``data_dir`` if already there), md5-verified and extracted.

Limits: only the python-pickle distribution is read (not the binary or MATLAB versions);
CIFAR-100 uses the 100 fine labels only (coarse labels are ignored). The pickles are read with
a restricted unpickler that only accepts numpy arrays, lists, dicts and bytes, so a tampered
file cannot run code, but it also cannot read pickles that contain anything else.
"""

from __future__ import annotations

import codecs
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import download as _dl
from .base import Dataset, DatasetCorruptError, DatasetNotFoundError, default_data_dir

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_PER_CLASS",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "cifar10",
    "cifar100",
]

#: the class names of CIFAR-10, in label order, and its images per class (train, test)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_PER_CLASS = (5000, 1000)
#: the usual per-channel normalisation of CIFAR-10 / CIFAR-100 (this module owns them)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    resource_attr: str  # looked up in the download module at call time (tests patch it)
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_CIFAR10 = _Spec(
    name="cifar10",
    title="CIFAR-10",
    resource_attr="CIFAR10_RESOURCE",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
)
_CIFAR100 = _Spec(
    name="cifar100",
    title="CIFAR-100",
    resource_attr="CIFAR100_RESOURCE",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    mean=CIFAR100_MEAN,
    std=CIFAR100_STD,
)

_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array unpickling helper, any version
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the few globals numpy arrays need."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not part of the CIFAR pickle format"
            ) from None


def _load_pickle(path: Path) -> dict[bytes, Any]:
    try:
        data = path.read_bytes()
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DatasetCorruptError(f"{path} is corrupt or not a CIFAR pickle file ({e})") from e
    if not isinstance(obj, dict):
        raise DatasetCorruptError(f"{path} is not a CIFAR pickle file (holds {type(obj).__name__})")
    return obj


def _ensure_folder(spec: _Spec, data_dir: Path, download: bool) -> Path:
    folder = data_dir / spec.folder
    needed = [*spec.train_files, *spec.test_files, spec.meta_file]
    missing = [folder / f for f in needed if not (folder / f).is_file()]
    if not missing:
        return folder
    resource: _dl.Resource = getattr(_dl, spec.resource_attr)
    archive = data_dir / resource.filename
    by_hand = (
        f"{spec.title} not found: missing {missing[0]}"
        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        + f". Put {resource.filename} ({resource.checksum_text()}) from {resource.url} at "
        f"{archive} (it is verified and extracted automatically), or extract it yourself so "
        f"that {folder} holds {', '.join(needed)}"
    )
    if not archive.is_file():
        if not download:
            raise DatasetNotFoundError(by_hand + "; or pass download=True.")
        try:
            _dl.fetch(resource, archive)
        except DatasetNotFoundError as e:
            raise DatasetNotFoundError(f"{by_hand}. Download failed: {e}") from e
    else:
        _dl.verify(archive, resource)
    _dl.safe_extract(archive, data_dir, expect=spec.folder)
    still = [folder / f for f in needed if not (folder / f).is_file()]
    if still:
        raise DatasetCorruptError(f"{archive} was extracted but {still[0]} is still missing")
    return folder


def _read_split(spec: _Spec, folder: Path, files: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    xs, ys = [], []
    for fname in files:
        path = folder / fname
        d = _load_pickle(path)
        if b"data" not in d or spec.label_key not in d:
            raise DatasetCorruptError(
                f"{path} lacks the keys b'data' and {spec.label_key!r} of the CIFAR format"
            )
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[spec.label_key], dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.shape[0] != y.shape[0]:
            raise DatasetCorruptError(
                f"{path}: data has shape {x.shape} and {y.shape[0]} labels; expected (N, 3072) "
                "with one label per row"
            )
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _load(spec: _Spec, data_dir: str | Path | None, download: bool) -> Dataset:
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder = _ensure_folder(spec, root, download)
    meta = _load_pickle(folder / spec.meta_file)
    if spec.names_key not in meta:
        raise DatasetCorruptError(f"{folder / spec.meta_file} lacks {spec.names_key!r}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[spec.names_key]]
    train_x, train_y = _read_split(spec, folder, spec.train_files)
    test_x, test_y = _read_split(spec, folder, spec.test_files)
    for split, y in (("train", train_y), ("test", test_y)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DatasetCorruptError(
                f"{spec.title} {split} labels out of range 0..{len(classes) - 1}"
            )
    return Dataset(
        name=spec.name,
        kind="image",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=len(classes),
        classes=classes,
        mean=spec.mean,
        std=spec.std,
    )


def cifar10(data_dir: str | Path | None = None, *, download: bool = True) -> Dataset:
    """CIFAR-10: 50,000 train / 10,000 test uint8 images (3, 32, 32), 10 classes.

    ``data_dir`` defaults to :func:`default_data_dir`. mean/std are the usual CIFAR-10 values
    (0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010). Raises
    :class:`DatasetNotFoundError` (with the exact paths and the URL) when the files are missing
    and cannot be downloaded, :class:`DatasetCorruptError` on a bad checksum or damaged file.
    """
    return _load(_CIFAR10, data_dir, download)


def cifar100(data_dir: str | Path | None = None, *, download: bool = True) -> Dataset:
    """CIFAR-100 with its 100 fine labels: 50,000 train / 10,000 test uint8 (3, 32, 32).

    mean/std (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762). Errors as :func:`cifar10`.
    """
    return _load(_CIFAR100, data_dir, download)
