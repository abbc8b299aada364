"""Generated, seeded data for tests: Gaussian class clusters rendered as small images.

Each class has a random prototype image (uniform in [0, 1] per pixel); a sample is its class
prototype plus Gaussian pixel noise, clipped to [0, 1] and stored as uint8. The classes are
(near) linearly separable at the default noise, so a model's loss visibly falls in a few steps.
Limits: the images have no spatial structure (neighbouring pixels are independent), so this
says nothing about convolutional inductive biases; use it to test plumbing, not optimizers.
"""

from __future__ import annotations

import torch

from tamegrad.optim._validation import check_int

from .base import Dataset, channel_stats, seeded_generator

__all__ = ["synthetic"]


def synthetic(
    *,
    n_train: int = 512,
    n_test: int = 128,
    num_classes: int = 4,
    image_size: int = 8,
    channels: int = 3,
    noise: float = 0.25,
    data_seed: int = 0,
    as_vectors: bool = False,
) -> Dataset:
    """Gaussian clusters: uint8 images ``(N, channels, image_size, image_size)``, balanced labels.

    Deterministic in all arguments (``data_seed`` picks the prototypes, labels and noise; the
    training seed does not change the data). With ``as_vectors=True`` the same data comes as
    kind ``"vector"``: float32 ``(N, channels * image_size**2)`` in [0, 1], no mean/std.
    """
    check_int("n_train", n_train, minimum=1)
    check_int("n_test", n_test, minimum=1)
    check_int("num_classes", num_classes, minimum=2)
    check_int("image_size", image_size, minimum=1)
    check_int("channels", channels, minimum=1)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not noise >= 0:
        raise ValueError(f"Invalid noise: {noise!r} (must be a number >= 0)")
    g = seeded_generator(data_seed)
    shape = (channels, image_size, image_size)
    prototypes = torch.rand((num_classes, *shape), generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
        x = prototypes[y] + float(noise) * torch.randn((n, *shape), generator=g)
        return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8), y.to(torch.int64)

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    classes = [f"class{i}" for i in range(num_classes)]
    if as_vectors:
        return Dataset(
            name="synthetic",
            kind="vector",
            train_x=train_x.reshape(n_train, -1).float().div_(255.0),
            train_y=train_y,
            test_x=test_x.reshape(n_test, -1).float().div_(255.0),
            test_y=test_y,
            num_classes=num_classes,
            classes=classes,
            mean=None,
            std=None,
        )
    mean, std = channel_stats(train_x)
    return Dataset(
        name="synthetic",
        kind="image",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        classes=classes,
        mean=mean,
        std=std,
    )
