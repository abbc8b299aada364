"""Exact, memory-lean ReLU and average pooling: what RAD's memory accounting assumes.

RAD (spec ``rad.md``) keeps ReLU masks exact; its memory budget counts only what Linear/Conv2d
layers store. In PyTorch a plain ``nn.ReLU`` saves its whole float output and ``avg_pool2d``
saves its whole input (its backward only needs the shape), so once RAD layers stop keeping
their inputs those two dominate: on the RAD paper's CIFAR CNN, RAD at keep_frac 0.1 alone
still stores ~0.88x the exact step's bytes. These layers compute the same outputs (bit for
bit) and gradients (see the limits) while storing less:

* :class:`MaskReLU`: saves the ``x > 0`` mask packed 8 per byte (1/32 of a float32 output);
* :class:`LeanAvgPool2d`: saves nothing but the input shape (backward needs no values).

They are converted by ``convert(model, "lean")`` (exact training, memory-lean) or together with
an estimator by ``convert(model, "rad", keep_frac=..., lean=True)``; ``revert`` undoes both.
Eval / ``no_grad`` run the plain layers.

Limits: ``MaskReLU`` with ``inplace=True`` marks its input dirty as ``relu_`` does; its input
gradient is ``grad * mask``, equal to the plain one for finite output gradients (a zero may
carry the sign of ``grad``; an infinite ``grad`` at a masked element gives NaN where the plain
ReLU gives 0; a NaN input gets a zero gradient). ``nn.MaxPool2d`` is not converted (it saves
int64 indices: use average pooling, as the RAD paper's CNN does). No double backward.
"""

from __future__ import annotations

import math
import sys
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import EstimatorLayer

__all__ = ["LeanAvgPool2d", "MaskReLU", "pack_bits", "unpack_bits"]

# (bytes b_0..b_7 in {0, 1}, read as one little-endian int64) * _GATHER >> 56 == sum b_i 2^i:
# b_i lands on bit 56 + i and no two partial products share a bit (so nothing carries).
_GATHER = 0x0102040810204080
_LITTLE = sys.byteorder == "little"
_L = TypeVar("_L", bound="_LeanMixin")


def pack_bits(mask: Tensor) -> Tensor:
    """A bool tensor -> uint8 tensor of ``ceil(numel / 8)`` bytes (bit i of byte j is element
    ``8 j + i``)."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    octets = flat.view(torch.uint8).view(-1, 8)
    if _LITTLE:
        return ((octets.view(torch.int64) * _GATHER) >> 56).to(torch.uint8).view(-1)
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8, device=flat.device)
    return (octets * weights).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_bits`: the bool tensor of ``shape``."""
    return _unpack_as(packed, shape, torch.bool)


_LUTS: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def _unpack_as(packed: Tensor, shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The bits of ``packed`` as 0/1 values of ``dtype`` (one table lookup per byte)."""
    key = (packed.device, dtype)
    lut = _LUTS.get(key)
    if lut is None:
        byte = torch.arange(256, device=packed.device).unsqueeze(1)
        bits = torch.arange(8, device=packed.device)
        lut = _LUTS[key] = ((byte >> bits) & 1).to(dtype)  # (256, 8): row v = bits of v
    n = math.prod(int(s) for s in shape)
    return lut.index_select(0, packed.int()).reshape(-1)[:n].view(shape)


class _MaskReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, inplace: bool) -> Tensor:  # type: ignore[override]
        if inplace:
            out = torch.relu_(x)
            ctx.mark_dirty(x)
        else:
            out = torch.relu(x)
        ctx.save_for_backward(pack_bits(out > 0))
        ctx.shape = out.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (packed,) = ctx.saved_tensors
        return grad * _unpack_as(packed, ctx.shape, grad.dtype), None


class _LeanMixin(EstimatorLayer):
    estimator_method = "lean"

    @classmethod
    def from_plain(cls: type[_L], layer: nn.Module, **_: Any) -> _L:
        """The lean layer sharing ``layer``'s state and hooks (options of the method that
        converts alongside, e.g. ``keep_frac``, are ignored)."""
        return cls._adopt(layer)

    @staticmethod
    def _lean_active(input: Tensor) -> bool:
        return torch.is_grad_enabled() and input.requires_grad


class MaskReLU(_LeanMixin, nn.ReLU):
    """``nn.ReLU`` that keeps a 1-bit mask for backward instead of its output (exact)."""

    plain_type = nn.ReLU

    def forward(self, input: Tensor) -> Tensor:
        if not self._lean_active(input):
            return super().forward(input)
        return _MaskReLUFn.apply(input, self.inplace)


class _LeanAvgPoolFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, args: tuple[Any, ...]) -> Tensor:  # type: ignore[override]
        ctx.args = args
        ctx.x_meta = (x.shape, x.dtype, x.device)
        return F.avg_pool2d(x, *args)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        shape, dtype, device = ctx.x_meta
        kernel, stride, padding, ceil_mode, count_include_pad, divisor = ctx.args
        like = torch.empty(shape, dtype=dtype, device=device)  # shape only: values unused
        return (
            torch.ops.aten.avg_pool2d_backward(
                grad, like, kernel, stride, padding, ceil_mode, count_include_pad, divisor
            ),
            None,
        )


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


class LeanAvgPool2d(_LeanMixin, nn.AvgPool2d):
    """``nn.AvgPool2d`` that saves only its input's shape for backward (exact)."""

    plain_type = nn.AvgPool2d

    def forward(self, input: Tensor) -> Tensor:
        if not self._lean_active(input):
            return super().forward(input)
        stride = self.stride if self.stride else self.kernel_size  # None/() -> kernel_size
        args = (
            _pair(self.kernel_size), _pair(stride), _pair(self.padding), bool(self.ceil_mode),
            bool(self.count_include_pad), self.divisor_override,
        )
        return _LeanAvgPoolFn.apply(input, args)


LEAN_FACTORIES: dict[type[nn.Module], Any] = {
    nn.ReLU: MaskReLU.from_plain,
    nn.AvgPool2d: LeanAvgPool2d.from_plain,
}
