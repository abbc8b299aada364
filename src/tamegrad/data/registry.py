"""Name -> loader registry behind :func:`load_dataset` / :func:`available_datasets`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tamegrad.optim._validation import check_int

from .base import Dataset, balanced_subset, seeded_generator
from .cifar import cifar10, cifar100
from .cifar_jpeg import cifar10_jpeg
from .digits import digits
from .imagefolder import imagefolder
from .synthetic import synthetic
from .text import tinyshakespeare

__all__ = ["available_datasets", "dataset_options", "load_dataset"]


@dataclass(frozen=True)
class _Entry:
    func: Callable[..., Dataset]
    data_dir: bool  # the loader reads files from data_dir
    download: bool  # the loader understands download=
    description: str
    hidden: tuple[str, ...] = ()  # keyword-only parameters not exposed as options

    def options(self) -> dict[str, Any]:
        params = inspect.signature(self.func).parameters.values()
        return {
            p.name: p.default
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY
            and p.name != "download"
            and p.name not in self.hidden
        }


def _imagefolder(data_dir: str | Path | None, **options: Any) -> Dataset:
    if data_dir is None:
        raise ValueError(
            "dataset 'imagefolder' needs data_dir= pointing to a folder with "
            "train/<class>/<image> and test/<class>/<image>, or to a .tar.gz of one"
        )
    return imagefolder(data_dir, **options)


_REGISTRY: dict[str, _Entry] = {
    "cifar10": _Entry(cifar10, True, True, "CIFAR-10 (official pickles, downloaded)"),
    "cifar10-jpeg": _Entry(cifar10_jpeg, True, False, "CIFAR-10 as JPEG, TAMEGRAD_DATA archive"),
    "cifar100": _Entry(cifar100, True, True, "CIFAR-100 fine labels (downloaded)"),
    "digits": _Entry(digits, False, False, "scikit-learn 8x8 digits (bundled, default)"),
    "imagefolder": _Entry(
        imagefolder, True, False, "train/<class>/<img> folder or .tar.gz", hidden=("name",)
    ),
    "synthetic": _Entry(synthetic, False, False, "seeded Gaussian class clusters (tests)"),
    "tinyshakespeare": _Entry(tinyshakespeare, True, True, "char-level Tiny Shakespeare"),
}


def available_datasets() -> list[str]:
    """Sorted names accepted by :func:`load_dataset`."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(
            f"Unknown dataset {name!r}; valid names: {', '.join(available_datasets())}"
        )
    return _REGISTRY[key]


def dataset_options(name: str) -> dict[str, Any]:
    """The extra keyword options of data set ``name`` with their defaults."""
    return _entry(name).options()


def _subset(ds: Dataset, n: int, seed: int) -> Dataset:
    if ds.train_y.ndim == 1:
        idx = balanced_subset(ds.train_y, n, seed)
    else:  # text: targets are sequences, so draw a plain seeded random subset
        check_int("train_subset", n, minimum=1, maximum=ds.train_y.shape[0])
        g = seeded_generator(seed)
        idx = torch.sort(torch.randperm(ds.train_y.shape[0], generator=g)[:n]).values
    return replace(ds, train_x=ds.train_x[idx], train_y=ds.train_y[idx])


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    train_subset: int | None = None,
    seed: int = 0,
    download: bool = True,
    **options: Any,
) -> Dataset:
    """Load data set ``name`` (see :func:`available_datasets`).

    ``data_dir`` is where the files are (default ``$TAMEGRAD_DATA``); for ``imagefolder`` it
    is the folder or archive itself; data sets without files (``digits``, ``synthetic``)
    ignore it. ``train_subset=n`` keeps a seeded (``seed``), class-balanced subset of ``n``
    training samples (a plain random subset of sequences for text); the test split and
    ``mean``/``std`` stay those of the full data set. ``download=False`` never touches the
    network. ``options`` are data-set specific (:func:`dataset_options`); an unknown one
    raises ``ValueError`` listing the valid ones, as does an unknown ``name``.
    """
    entry = _entry(name)
    valid = entry.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        allowed = ", ".join(valid) if valid else "none"
        raise ValueError(
            f"Unknown option(s) for dataset {name!r}: {', '.join(unknown)}; "
            f"valid options: {allowed}"
        )
    kwargs: dict[str, Any] = dict(options)
    if entry.download:
        kwargs["download"] = download
    if entry.func is imagefolder:
        ds = _imagefolder(data_dir, **kwargs)
    elif entry.data_dir:
        ds = entry.func(data_dir, **kwargs)
    else:
        ds = entry.func(**kwargs)
    if train_subset is not None:
        ds = _subset(ds, train_subset, seed)
    return ds
