"""Data sets and the batched data path of the tamegrad training engine.

``load_dataset(name, ...)`` returns a :class:`Dataset` (whole splits as tensors);
:class:`BatchLoader` turns a split into deterministic, optionally augmented and distributed,
batches. Data sets: ``cifar10``, ``cifar100`` (downloaded), ``cifar10-jpeg`` and
``imagefolder`` (local folders / archives), ``digits`` (bundled with scikit-learn, the default),
``synthetic`` (generated) and ``tinyshakespeare`` (character-level text).
"""

from __future__ import annotations

from .augment import Augment, crop, normalize, random_crop, random_hflip
from .base import (
    Dataset,
    DatasetCorruptError,
    DatasetNotFoundError,
    balanced_subset,
    default_cache_dir,
    default_data_dir,
)
from .loader import Batch, BatchLoader, derive_seed
from .registry import available_datasets, dataset_options, load_dataset
from .text import decode, encode

__all__ = [
    "Augment",
    "Batch",
    "BatchLoader",
    "Dataset",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "available_datasets",
    "balanced_subset",
    "crop",
    "dataset_options",
    "decode",
    "default_cache_dir",
    "default_data_dir",
    "derive_seed",
    "encode",
    "load_dataset",
    "normalize",
    "random_crop",
    "random_hflip",
]
