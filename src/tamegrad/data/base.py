"""The :class:`Dataset` container and helpers shared by every data set loader.

Everything here is in-memory: a :class:`Dataset` holds whole splits as tensors, so it cannot
describe data sets larger than RAM (there is no streaming / lazy loading).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from tamegrad.optim._validation import check_int

__all__ = [
    "Dataset",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "Kind",
    "balanced_subset",
    "channel_stats",
    "default_cache_dir",
    "default_data_dir",
    "mask_seed",
    "seeded_generator",
]

Kind = Literal["image", "text", "vector"]


class DatasetNotFoundError(RuntimeError):
    """The files of a data set are missing and could not be downloaded.

    The message says which files to put where (exact paths) and where to get them.
    """


class DatasetCorruptError(RuntimeError):
    """A data file or archive exists but is damaged (bad checksum, truncated, wrong format)."""


@dataclass
class Dataset:
    """Both splits of a data set, fully in memory.

    Layout by ``kind``:

    * ``"image"``: ``train_x``/``test_x`` uint8 ``(N, C, H, W)``, ``*_y`` int64 ``(N,)``;
      ``mean``/``std`` per channel in ``[0, 1]`` units (what :func:`~tamegrad.data.normalize`
      expects).
    * ``"text"``: ``*_x`` int64 ``(N, T)`` token ids, ``*_y`` int64 ``(N, T)`` next-token targets;
      ``num_classes`` is the vocabulary size, ``classes`` the vocabulary; ``mean``/``std`` None.
    * ``"vector"``: ``*_x`` float32 ``(N, D)``, ``*_y`` int64 ``(N,)``; ``mean``/``std`` None.
    """

    name: str
    kind: Kind
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def __post_init__(self) -> None:
        if self.kind not in ("image", "text", "vector"):
            raise ValueError(f"Dataset {self.name!r}: unknown kind {self.kind!r}")
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"Dataset {self.name!r}: {split}_x has {x.shape[0]} samples but "
                    f"{split}_y has {y.shape[0]}"
                )

    def __repr__(self) -> str:  # tensors would print their contents
        return (
            f"Dataset(name={self.name!r}, kind={self.kind!r}, "
            f"train_x={tuple(self.train_x.shape)} {self.train_x.dtype}, "
            f"test_x={tuple(self.test_x.shape)} {self.test_x.dtype}, "
            f"num_classes={self.num_classes}, mean={self.mean}, std={self.std})"
        )


#: seeds are folded into 63 bits, so any Python int (negative, or >= 2**64) seeds a generator
SEED_MASK = 0x7FFF_FFFF_FFFF_FFFF


def mask_seed(seed: int) -> int:
    """``seed`` folded into a non-negative 63-bit int (``int(seed) & SEED_MASK``)."""
    return int(seed) & SEED_MASK


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`mask_seed` of ``seed``."""
    return torch.Generator().manual_seed(mask_seed(seed))


def default_data_dir() -> Path:
    """Where data sets live: ``$TAMEGRAD_DATA`` if set, else ``~/.cache/tamegrad/data``.

    The folder is not created here (loaders create it only when they download).
    """
    env = os.environ.get("TAMEGRAD_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "tamegrad" / "data"


def default_cache_dir() -> Path:
    """Where decoded caches go: ``$TAMEGRAD_CACHE`` if set, else ``~/.cache/tamegrad/cache``."""
    env = os.environ.get("TAMEGRAD_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "tamegrad" / "cache"


def balanced_subset(y: Tensor, n: int, seed: int) -> Tensor:
    """Indices of a seeded, class-balanced subset of ``n`` samples with 1-D labels ``y``.

    ``n`` is divided evenly over the classes present in ``y``; when it does not divide, the
    first ``n % num_classes`` classes (in label order) get one extra sample. Within a class the
    samples are drawn uniformly without replacement. The returned int64 indices are sorted.

    Cannot balance what is not there: raises ``ValueError`` if ``n`` is not positive, exceeds
    ``len(y)``, or asks more samples of a class than it has. Only for 1-D class labels.
    """
    check_int("subset size n", n)
    if y.ndim != 1:
        raise ValueError(f"balanced_subset needs 1-D class labels, got shape {tuple(y.shape)}")
    if n <= 0:
        raise ValueError(f"Invalid subset size n={n}: must be positive")
    if n > y.numel():
        raise ValueError(f"Invalid subset size n={n}: only {y.numel()} samples available")
    labels = y.detach().cpu().long()
    classes = torch.unique(labels)
    k = classes.numel()
    base, extra = divmod(n, k)
    g = seeded_generator(seed)
    picked: list[Tensor] = []
    for i, c in enumerate(classes.tolist()):
        want = base + (1 if i < extra else 0)
        members = torch.nonzero(labels == c, as_tuple=False).flatten()
        if want > members.numel():
            raise ValueError(
                f"Invalid subset size n={n}: a balanced subset needs {want} samples of class {c}, "
                f"which has only {members.numel()} (at most {k * _min_count(labels)} samples "
                f"can be split evenly over the {k} classes)"
            )
        perm = torch.randperm(members.numel(), generator=g)[:want]
        picked.append(members[perm])
    return torch.sort(torch.cat(picked)).values


def _min_count(labels: Tensor) -> int:
    counts = torch.unique(labels, return_counts=True)[1]
    return int(counts.min())


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images ``(N, C, H, W)``, in [0, 1].

    Uses a 256-bin histogram per channel, so it needs no float copy of the data.
    """
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"channel_stats needs uint8 (N,C,H,W), got {x.dtype} {tuple(x.shape)}")
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means: list[float] = []
    stds: list[float] = []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        total = hist.sum()
        m = (hist * levels).sum() / total
        var = (hist * (levels - m) ** 2).sum() / total
        means.append(float(m))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)
