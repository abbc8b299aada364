"""scikit-learn's bundled 8x8 handwritten digits (no download): the embedded default data set.

1,797 grey images, 8x8, originally 0..16, rescaled here to uint8 0..255 (``round(v * 255 / 16)``).
The train/test split is stratified and fixed (independent of the training seed), so every run
sees the same test set. Limits: tiny and easy (a linear model reaches ~95%); it is for demos and
smoke tests, not for drawing conclusions about optimizers on real image data.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Dataset, channel_stats

__all__ = ["digits"]

_SPLIT_SEED = 0


def digits(*, test_size: int = 300) -> Dataset:
    """The 8x8 digits as uint8 (N, 1, 8, 8), 10 classes, stratified split (default 1497 / 300).

    The split depends only on ``test_size`` (fixed internal seed). mean/std are computed from
    the training images. Raises ``ValueError`` when ``test_size`` leaves fewer than 10 samples
    in either split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    data = np.asarray(bunch.data, dtype=np.float64)
    target = np.asarray(bunch.target, dtype=np.int64)
    n = data.shape[0]
    valid = isinstance(test_size, int) and not isinstance(test_size, bool)
    if not valid or not 10 <= test_size <= n - 10:
        raise ValueError(f"Invalid test_size {test_size!r}: need an int in 10..{n - 10}")
    images = np.rint(data * (255.0 / 16.0)).clip(0, 255).astype(np.uint8).reshape(n, 1, 8, 8)
    idx_train, idx_test = train_test_split(
        np.arange(n), test_size=test_size, stratify=target, random_state=_SPLIT_SEED
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    train_x = torch.from_numpy(images[idx_train])
    mean, std = channel_stats(train_x)
    return Dataset(
        name="digits",
        kind="image",
        train_x=train_x,
        train_y=torch.from_numpy(target[idx_train]),
        test_x=torch.from_numpy(images[idx_test]),
        test_y=torch.from_numpy(target[idx_test]),
        num_classes=10,
        classes=[str(i) for i in range(10)],
        mean=mean,
        std=std,
    )
