"""``cifar10-jpeg``: CIFAR-10 re-encoded as JPEG, read through :func:`~tamegrad.data.imagefolder`.

The set is known exactly (10 classes, 5,000 train and 1,000 test images each), so it is checked:
a tar archive cut short at a file boundary reads like a complete one, and without the check a
copy missing its last test classes trained and reported accuracy on 7,000 test images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tamegrad.optim._validation import check_flag

from .base import Dataset, DatasetCorruptError, DatasetNotFoundError, default_data_dir
from .cifar import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_PER_CLASS, CIFAR10_STD
from .imagefolder import imagefolder

__all__ = ["cifar10_jpeg"]


def _check_cifar10_counts(ds: Dataset, source: Path) -> None:
    """CIFAR-10's 10 classes with 5,000 train and 1,000 test images each, or an error naming
    every class and split that differs."""
    if tuple(ds.classes) != CIFAR10_CLASSES:
        missing = [c for c in CIFAR10_CLASSES if c not in ds.classes]
        extra = [c for c in ds.classes if c not in CIFAR10_CLASSES]
        raise DatasetCorruptError(
            f"{source} is not the complete cifar10-jpeg set: its classes are "
            f"{', '.join(ds.classes)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
            + f" (expected {', '.join(CIFAR10_CLASSES)}); pass check_complete=False to load it "
            "anyway"
        )
    wrong = []
    for split, y, want in (
        ("train", ds.train_y, CIFAR10_PER_CLASS[0]),
        ("test", ds.test_y, CIFAR10_PER_CLASS[1]),
    ):
        for c, n in zip(CIFAR10_CLASSES, torch.bincount(y, minlength=10).tolist()):
            if n != want:
                wrong.append(f"{split}/{c} has {n} images")
    if wrong:
        raise DatasetCorruptError(
            f"{source} is not the complete cifar10-jpeg set: {', '.join(wrong)} (expected "
            f"{CIFAR10_PER_CLASS[0]} per class in train/ and {CIFAR10_PER_CLASS[1]} in test/); "
            "the archive is probably a partial copy: copy it again, or pass check_complete=False "
            "to load a subset made on purpose"
        )


def cifar10_jpeg(
    data_dir: str | Path | None = None,
    *,
    workers: int = 2,
    cache: bool = True,
    check_complete: bool = True,
) -> Dataset:
    """CIFAR-10 re-encoded as JPEG: ``<data_dir>/cifar10-jpeg.tar.gz`` via :func:`imagefolder`.

    ``data_dir`` (default :func:`default_data_dir`, i.e. ``$TAMEGRAD_DATA``) may also be the
    archive itself or contain an extracted ``cifar10-jpeg/`` folder. Uses the usual CIFAR-10
    mean/std. There is no official download for this file: when it is missing,
    :class:`DatasetNotFoundError` says where to put it.

    The set is known exactly, so a partial copy (a tar that ends cleanly at a file boundary
    reads like a complete one) is refused with :class:`DatasetCorruptError` naming each class
    and split whose count is not 5,000 (train) / 1,000 (test), or the classes that differ
    from CIFAR-10's. ``check_complete=False`` skips the counts (a subset made on purpose);
    a class present in train/ but missing from test/ is refused either way.
    """
    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if base.is_file():
        source = base
    elif (base / "cifar10-jpeg.tar.gz").is_file():
        source = base / "cifar10-jpeg.tar.gz"
    elif (base / "cifar10-jpeg").is_dir():
        source = base / "cifar10-jpeg"
    else:
        raise DatasetNotFoundError(
            f"cifar10-jpeg: {(base / 'cifar10-jpeg.tar.gz').resolve()} does not exist. It has no "
            "download URL: put the archive (train/<class>/NNNN.jpg, test/<class>/NNNN.jpg) "
            "there, point TAMEGRAD_DATA or data_dir at its folder, or use the 'cifar10' data "
            "set, which downloads the original"
        )
    check_flag("check_complete", check_complete)
    ds = imagefolder(
        source,
        name="cifar10-jpeg",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        workers=workers,
        cache=cache,
    )
    if check_complete:
        _check_cifar10_counts(ds, source)
    return ds
