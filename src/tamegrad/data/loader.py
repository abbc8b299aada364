"""``BatchLoader``: a deterministic, batched, tensor-only data path (no per-sample Python).

Determinism: the epoch's permutation comes from a ``torch.Generator`` seeded with
``derive_seed(seed, epoch, 0x5045524D)``, the augmentation of batch ``b`` on rank ``r`` from
``derive_seed(seed, epoch, b, r, 0x41554730)`` (a SplitMix64 chain, see :func:`derive_seed`;
no use of Python's salted ``hash()``). Hence ``epoch(e, start_batch=k)`` yields exactly the
batches ``k, k+1, ...`` of ``epoch(e)``, and results do not depend on the device.

Distributed: all ranks share the permutation; global batch ``b`` is the slice
``perm[b*W*B : (b+1)*W*B]`` and rank ``r`` takes its ``r``-th block of ``B`` samples, so the
``W`` ranks together cover a global batch of ``W * batch_size``. ``drop_last=True`` drops an
incomplete final global batch; otherwise the final global batch is split evenly over the
ranks, padded (as ``torch.utils.data.DistributedSampler`` does) by repeating indices from the
start of the permutation so that every rank gets the same number of samples (at most
``W - 1`` repeats per epoch). With ``W = 1`` this is exactly torch's ``DataLoader`` behaviour.

Limits: the whole data set is one in-memory tensor (no lazy loading); batches are produced
synchronously in the calling thread (there are no worker processes or prefetching; at small
image sizes the per-batch cost is a few tens of microseconds).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from tamegrad.optim._validation import check_int

from .augment import Augment
from .base import mask_seed

__all__ = ["Batch", "BatchLoader", "derive_seed"]

_MASK64 = (1 << 64) - 1
_PERM_TAG = 0x5045524D  # "PERM"
_AUG_TAG = 0x41554730  # "AUG0"


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(*values: int) -> int:
    """Mix integers into one 63-bit seed: ``h = splitmix64(h ^ v)`` over the values.

    A fixed formula (stable across processes, Python versions and platforms); negative values
    are taken modulo 2**64.
    """
    h = 0x243F6A8885A308D3
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return mask_seed(h)


class Batch(NamedTuple):
    """One batch of this rank: inputs, targets, the example indices into the data set, and
    optional per-example weights (set by a sampler; None means equal weights)."""

    x: Tensor
    y: Tensor
    indices: Tensor
    weights: Tensor | None = None


class BatchLoader:
    """Batches of ``(x, y)`` drawn from in-memory tensors, deterministic in (seed, epoch, batch).

    ``x`` is uint8 images ``(N, C, H, W)`` (yielded as float32, augmented if ``augment`` is
    given, then normalised with ``mean``/``std`` in [0, 1] units, or just scaled to [0, 1]
    when they are None), int64 tokens ``(N, T)`` or float vectors ``(N, D)`` (both yielded
    unchanged: ``augment``, ``mean`` and ``std`` are ignored for non-image data). ``y`` is
    yielded as int64. Batches are moved to ``device`` before augmentation.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        augment: Augment | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.world_size = check_int("world_size", world_size, minimum=1)
        self.rank = check_int("rank", rank, minimum=0)
        if rank >= world_size:
            raise ValueError(f"Invalid rank: {rank} (must be < world_size={world_size})")
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        self.x = x
        self.y = y if y.dtype == torch.int64 else y.to(torch.int64)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.device = torch.device(device)
        self.is_image = x.ndim == 4 and x.dtype == torch.uint8
        self.augment = augment if self.is_image else None
        self._scale: Tensor | None = None
        self._shift: Tensor | None = None
        if self.is_image:
            c = x.shape[1]
            m = torch.zeros(c) if mean is None else torch.tensor(mean, dtype=torch.float32)
            s = torch.ones(c) if std is None else torch.tensor(std, dtype=torch.float32)
            if m.numel() != c or s.numel() != c:
                raise ValueError(f"mean/std need {c} values (one per channel), got {mean}/{std}")
            if bool((s <= 0).any()):
                raise ValueError(f"std must be positive, got {std}")
            self._scale = (1.0 / (255.0 * s)).reshape(1, c, 1, 1).to(self.device)
            self._shift = (-m / s).reshape(1, c, 1, 1).to(self.device)
        n, global_batch = x.shape[0], self.batch_size * self.world_size
        if self.drop_last:
            self._num_batches = n // global_batch
        else:
            self._num_batches = -(-n // global_batch)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return self._num_batches

    @property
    def num_samples(self) -> int:
        """Number of samples in the data set (all ranks)."""
        return int(self.x.shape[0])

    def permutation(self, epoch: int) -> Tensor:
        """The epoch's sample order shared by all ranks (``arange`` when not shuffling)."""
        n = self.num_samples
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, _PERM_TAG))
        return torch.randperm(n, generator=g)

    def batch_indices(self, perm: Tensor, batch: int) -> Tensor:
        """Indices into ``x`` of this rank's batch ``batch`` given the epoch's permutation."""
        w, bs, n = self.world_size, self.batch_size, perm.numel()
        start = batch * w * bs
        if start + w * bs <= n:
            return perm[start + self.rank * bs : start + (self.rank + 1) * bs]
        rest = perm[start:]  # final, incomplete global batch (only when not drop_last)
        k = -(-rest.numel() // w)
        missing = k * w - rest.numel()
        if missing:
            rest = torch.cat([rest, perm[torch.arange(missing) % n]])
        return rest[self.rank * k : (self.rank + 1) * k]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield this rank's batches ``start_batch, ..., len(self) - 1`` of epoch ``epoch``.

        Raises ``ValueError`` (at call time) when ``start_batch`` is negative or beyond
        ``len(self)``; ``start_batch == len(self)`` yields nothing.
        """
        check_int("epoch", epoch)
        check_int("start_batch", start_batch, minimum=0)
        if start_batch > self._num_batches:
            raise ValueError(
                f"Invalid start_batch: {start_batch} (this loader has {self._num_batches} "
                "batches per epoch)"
            )
        return self._iterate(epoch, start_batch)

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Like :meth:`epoch`, but each item is a :class:`Batch` that also carries the example
        indices (``weights`` is None: the loader's order gives every example equal weight)."""
        self.epoch(epoch, start_batch)  # validate now, not at the first next()
        return self._iterate_indexed(epoch, start_batch)

    def _iterate_indexed(self, epoch: int, start_batch: int) -> Iterator[Batch]:
        if start_batch >= self._num_batches:
            return
        perm = self.permutation(epoch)
        if perm.device != self.x.device:
            perm = perm.to(self.x.device)
        for b in range(start_batch, self._num_batches):
            idx = self.batch_indices(perm, b)
            x, y = self.load(idx, epoch, b)
            yield Batch(x, y, idx)

    def _iterate(self, epoch: int, start_batch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y, _, _ in self._iterate_indexed(epoch, start_batch):
            yield x, y

    def load(self, idx: Tensor, epoch: int, batch: int) -> tuple[Tensor, Tensor]:
        """The examples ``idx`` as batch ``batch`` of epoch ``epoch``: moved to the device,
        augmented with the (seed, epoch, batch, rank) generator and normalised. A sampler that
        picks its own indices uses this to get exactly what :meth:`epoch` would yield."""
        xb = self.x.index_select(0, idx).to(self.device, non_blocking=True)
        yb = self.y.index_select(0, idx.to(self.y.device)).to(self.device, non_blocking=True)
        if not self.is_image:
            return xb, yb
        if self.augment is not None:
            seed = derive_seed(self.seed, epoch, batch, self.rank, _AUG_TAG)
            xb = self.augment(xb, torch.Generator().manual_seed(seed))
        assert self._scale is not None and self._shift is not None
        return xb.to(torch.float32).mul_(self._scale).add_(self._shift), yb
