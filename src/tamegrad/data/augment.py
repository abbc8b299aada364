"""Batched image augmentation on tensors: one vectorised op per batch, never a per-image loop.

All random draws use an explicit ``torch.Generator`` on the CPU (so results are identical on
any device and reproducible from the generator's seed); the drawn values are then moved to the
images' device. Limits: only zero-padded random crops of the original size and horizontal
flips (the standard CIFAR recipe); no colour, scale or rotation augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Augment", "crop", "normalize", "random_crop", "random_hflip"]


def _check_images(x: Tensor, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} needs a batch of images (B, C, H, W), got shape {tuple(x.shape)}")


def crop(x: Tensor, padding: int, dy: Tensor, dx: Tensor, flip: Tensor | None = None) -> Tensor:
    """Crop each image of ``x`` (B, C, H, W) from its zero-padded version at offsets ``dy, dx``.

    ``out[b, :, i, j] = pad(x)[b, :, i + dy[b], j + dx[b]]`` with ``padding`` zeros on every
    side, i.e. the content of image ``b`` moves down by ``padding - dy[b]`` rows and right by
    ``padding - dx[b]`` columns. Offsets must lie in ``[0, 2 * padding]``. If ``flip`` (bool,
    (B,)) is given, the flagged crops are also mirrored left-right (column ``j`` is read from
    ``W - 1 - j``), in the same pass. One gather for the whole batch; the output has the
    dtype and size of ``x``.
    """
    _check_images(x, "crop")
    if padding < 0:
        raise ValueError(f"Invalid padding: {padding} (must be >= 0)")
    b = x.shape[0]
    dev = x.device
    dy = dy.to(device=dev, dtype=torch.long).reshape(b)
    dx = dx.to(device=dev, dtype=torch.long).reshape(b)
    offsets = torch.cat([dy, dx])
    if offsets.numel() and not 0 <= int(offsets.min()) <= int(offsets.max()) <= 2 * padding:
        raise ValueError(f"crop offsets must lie in [0, {2 * padding}] for padding={padding}")
    return _crop(x, padding, dy, dx, flip)


def _crop(x: Tensor, padding: int, dy: Tensor, dx: Tensor, flip: Tensor | None) -> Tensor:
    """:func:`crop` without argument checks (offsets: int64 on ``x.device``)."""
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    wp = w + 2 * padding
    j = torch.arange(w, device=dev)
    cols = j.expand(b, w)
    if flip is not None:
        cols = torch.where(flip.to(dev).reshape(b, 1), (w - 1) - j, j)
    rows = (dy[:, None] + torch.arange(h, device=dev)) * wp  # (B, H) flat row starts
    index = (rows[:, :, None] + (dx[:, None] + cols)[:, None, :]).reshape(b, 1, h * w)
    flat = padded.reshape(b, c, -1)
    return flat.gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad by ``padding`` and crop back to (H, W) at a uniformly drawn offset per image.

    Draws ``dy`` then ``dx`` (each ``randint(0, 2 * padding + 1, (B,))`` from ``generator``)
    and calls :func:`crop`. ``padding=0`` returns ``x`` unchanged (and draws nothing).
    """
    _check_images(x, "random_crop")
    if padding == 0:
        return x
    if padding < 0:
        raise ValueError(f"Invalid padding: {padding} (must be >= 0)")
    n = x.shape[0]
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    return crop(x, padding, dy, dx)


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability 1/2 (mask ``rand(B) < 0.5``)."""
    _check_images(x, "random_hflip")
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images (0..255) -> float32 ``(x / 255 - mean) / std`` per channel (dim 1)."""
    c = x.shape[1] if x.ndim >= 2 else 0
    if len(mean) != c or len(std) != c:
        raise ValueError(
            f"normalize: {len(mean)} means / {len(std)} stds for {c} channels "
            f"(x has shape {tuple(x.shape)})"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"normalize: std must be positive, got {tuple(std)}")
    shape = (1, c) + (1,) * (x.ndim - 2)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).reshape(shape)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).reshape(shape)
    return x.to(torch.float32).mul_(1.0 / (255.0 * s)).add_(-m / s)


@dataclass
class Augment:
    """Training augmentation: random crop with ``crop_padding`` zeros, then random h-flip.

    ``crop_padding=0`` disables the crop. Only for image batches (B, C, H, W).
    """

    crop_padding: int = 4
    hflip: bool = True

    def __post_init__(self) -> None:
        if (
            isinstance(self.crop_padding, bool)
            or not isinstance(self.crop_padding, int)
            or (self.crop_padding < 0)
        ):
            raise ValueError(f"Invalid crop_padding: {self.crop_padding!r} (must be an int >= 0)")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch: same draws and result as ``random_hflip(random_crop(x))``.

        Draws from ``generator`` in a fixed order (crop offsets ``dy``, ``dx``, then the flip
        mask) and applies crop and flip together in a single gather.
        """
        _check_images(x, "Augment")
        n, p = x.shape[0], self.crop_padding
        if p:
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        else:
            dy = dx = torch.zeros(n, dtype=torch.long)
        flip = torch.rand(n, generator=generator) < 0.5 if self.hflip else None
        if not p and flip is None:
            return x
        dev = x.device
        return _crop(x, p, dy.to(dev), dx.to(dev), None if flip is None else flip.to(dev))
