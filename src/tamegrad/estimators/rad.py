"""RAD layers: Linear and Conv2d that store a random fraction of their input for backward.

Randomized automatic differentiation (Oktay et al., ICLR 2021; spec ``shared/specs/rad.md``).
The forward output and the gradient with respect to the input are exact (the same kernels as
the plain layer, so bit-identical); only the copy of the input kept for the *weight* gradient is
randomised, and the weight gradient is unbiased. What is sampled:

* ``RADLinear``: for every row of the input (every example; every token of a ``(B, T, D)``
  input) ``k = ceil(keep_frac * D)`` of the ``D`` input features;
* ``RADConv2d``: for every (example, channel) ``k = ceil(keep_frac * H * W)`` of the ``H * W``
  spatial positions of the (padded, when ``padding_mode`` is not ``"zeros"``) input.

Variants (``variant=``):

* ``"different"`` (default): independent indices per row, drawn uniformly with replacement;
  the stored values are scattered back (duplicates add) and the weight gradient is scaled by
  ``D / k``: E[reconstruction] = input, so E[weight grad] = exact weight grad;
* ``"same"``: one index set shared by every row of the batch (noisier: its errors do not
  average over the batch);
* ``"projection"``: the rows are multiplied by one ``D x k`` Rademacher (+-1) matrix ``R``;
  backward multiplies by ``R^T`` and scales by ``1 / k`` (E[R R^T] = k I). A per-row matrix is not
  offered (its regeneration in backward would need ``rows * D * k`` elements).

Stored for backward (``ctx.save_for_backward``): the ``rows x k`` sampled/projected values in the
compute dtype and a one-element int64 seed tensor (8 bytes); the indices / the matrix are
regenerated in backward from the seed with a local ``torch.Generator``, and the weight is the
parameter itself (not counted as activation memory). So a layer's saved bytes are exactly
``rows * k * element_size + 8``. The seed is drawn from torch's default (CPU) generator, so runs
are reproducible under ``torch.manual_seed`` and resume exactly when torch's RNG state is
restored; drawing it advances that generator by one draw per layer call.

Plain behaviour: in ``eval()``, under ``torch.no_grad()`` / inference mode, when the weight does
not require grad, or at ``keep_frac == 1`` the layer runs the plain ``nn.Linear`` /
``nn.Conv2d`` forward: nothing extra is computed or stored. Autocast is honoured: inputs are cast
as autocast would, the stored values are in the autocast dtype and the weight is recast in
backward. Limits: no double backward (second-order gradients through the weight path are not
supported); ``padding="same"`` with an even total padding per dimension only.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import EstimatorLayer

__all__ = [
    "VARIANTS",
    "RADConv2d",
    "RADLinear",
    "check_keep_frac",
    "check_variant",
    "kept_count",
]

VARIANTS = ("different", "same", "projection")
_R = TypeVar("_R", bound="_RADMixin")


def check_keep_frac(value: object) -> float:
    """``keep_frac`` must be a real number in ``(0, 1]``; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid keep_frac: {value!r} (expected a number in (0, 1])")
    v = float(value)
    if not math.isfinite(v) or not 0.0 < v <= 1.0:
        raise ValueError(f"Invalid keep_frac: {value!r} (must be in (0, 1])")
    return v


def check_variant(value: object) -> str:
    if value not in VARIANTS:
        raise ValueError(f"Invalid variant: {value!r} (expected one of {', '.join(VARIANTS)})")
    return str(value)


def kept_count(keep_frac: float, dim: int) -> int:
    """``k = ceil(keep_frac * dim)`` (the product rounded to 6 decimals first, so that
    ``0.7 * 10`` gives 7), at least 1 and at most ``dim``."""
    return max(1, min(dim, math.ceil(round(keep_frac * dim, 6))))


def _draw_seed() -> Tensor:
    return torch.randint(0, 2**62, (1,), dtype=torch.int64)


def _generator(seed: Tensor, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed.item()))


def _compute_dtype(x: Tensor) -> torch.dtype:
    dev = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)  # .to returns t itself when the dtype matches


def _compress(rows: Tensor, k: int, variant: str, g: torch.Generator) -> Tensor:
    """``rows`` (R, D) -> the (R, k) values kept for backward."""
    r, d = rows.shape
    if variant == "different":
        idx = torch.randint(0, d, (r, k), generator=g, device=rows.device)
        return rows.gather(1, idx)
    if variant == "same":
        idx = torch.randint(0, d, (k,), generator=g, device=rows.device)
        return rows.index_select(1, idx)
    sign = torch.randint(0, 2, (d, k), generator=g, device=rows.device, dtype=rows.dtype)
    return rows @ (sign * 2 - 1)


def _expand(vals: Tensor, d: int, variant: str, g: torch.Generator) -> tuple[Tensor, float]:
    """(R, k) stored values -> (R, D) reconstruction and the scale making it unbiased."""
    r, k = vals.shape
    if variant == "different":
        idx = torch.randint(0, d, (r, k), generator=g, device=vals.device)
        return vals.new_zeros(r, d).scatter_add_(1, idx, vals), d / k
    if variant == "same":
        idx = torch.randint(0, d, (k,), generator=g, device=vals.device)
        return vals.new_zeros(r, d).index_add_(1, idx, vals), d / k
    sign = torch.randint(0, 2, (d, k), generator=g, device=vals.device, dtype=vals.dtype)
    return vals @ (sign * 2 - 1).t(), 1.0 / k


class _RADLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, keep_frac: float, variant: str
    ) -> Tensor:
        dtype = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            xc = x.to(dtype)
            out = F.linear(xc, weight.to(dtype), _cast(bias, dtype))
            d = x.shape[-1]
            k = kept_count(keep_frac, d)
            seed = _draw_seed()
            with torch.no_grad():
                vals = _compress(xc.reshape(-1, d), k, variant, _generator(seed, x.device))
        ctx.save_for_backward(vals, seed, weight)
        ctx.variant = variant
        ctx.x_meta = (x.shape, x.dtype)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        vals, seed, weight = ctx.saved_tensors
        x_shape, x_dtype = ctx.x_meta
        d = x_shape[-1]
        with torch.autocast(grad_out.device.type, enabled=False):
            g2 = grad_out.reshape(-1, grad_out.shape[-1])
            grad_x = grad_w = grad_b = None
            if ctx.needs_input_grad[0]:
                grad_x = g2.mm(weight.to(grad_out.dtype)).view(x_shape).to(x_dtype)
            if ctx.needs_input_grad[1]:
                gen = _generator(seed, vals.device)
                if ctx.variant == "same":
                    idx = torch.randint(0, d, (vals.shape[1],), generator=gen, device=vals.device)
                    part = g2.t().to(vals.dtype).mm(vals)
                    grad_w = part.new_zeros(g2.shape[1], d).index_add_(1, idx, part)
                    scale = d / vals.shape[1]
                else:
                    x_hat, scale = _expand(vals, d, ctx.variant, gen)
                    grad_w = g2.t().to(x_hat.dtype).mm(x_hat)
                grad_w = grad_w.to(weight.dtype).mul_(scale)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_b = g2.sum(0).to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None


class _RADConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, layer: RADConv2d,
        padding: tuple[int, int],
    ) -> Tensor:
        dtype = _compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            xc = x.to(dtype)
            out = layer._plain_conv(xc, weight.to(dtype), _cast(bias, dtype))
            b, c, h, w = x.shape
            k = kept_count(layer.keep_frac, h * w)
            seed = _draw_seed()
            with torch.no_grad():
                rows = xc.reshape(b * c, h * w)
                vals = _compress(rows, k, layer.variant, _generator(seed, x.device))
        ctx.save_for_backward(vals, seed, weight)
        ctx.variant = layer.variant
        ctx.x_meta = (x.shape, x.dtype)
        ctx.conv = (layer.stride, padding, layer.dilation, layer.groups)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        vals, seed, weight = ctx.saved_tensors
        x_shape, x_dtype = ctx.x_meta
        b, c, h, w = x_shape
        stride, padding, dilation, groups = ctx.conv
        with torch.autocast(grad_out.device.type, enabled=False):
            x_hat, scale = _expand(vals, h * w, ctx.variant, _generator(seed, vals.device))
            wc = weight.to(grad_out.dtype)
            mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.bias_sizes is not None]
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad_out, x_hat.view(b, c, h, w).to(grad_out.dtype), wc, ctx.bias_sizes,
                list(stride), list(padding), list(dilation), False, [0, 0], groups, mask,
            )
        grad_x = gx.to(x_dtype) if mask[0] else None
        grad_w = gw.to(weight.dtype).mul_(scale) if mask[1] else None
        grad_b = gb.to(weight.dtype) if mask[2] and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


class _RADMixin(EstimatorLayer):
    estimator_method = "rad"
    _estimator_attrs = ("keep_frac", "variant")
    keep_frac: float
    variant: str

    def _rad_active(self, weight: Tensor) -> bool:
        return (
            self.training  # type: ignore[attr-defined]
            and torch.is_grad_enabled()
            and weight.requires_grad
            and self.keep_frac < 1.0
        )

    def _set_options(self, keep_frac: object, variant: object) -> None:
        self.keep_frac = check_keep_frac(keep_frac)
        self.variant = check_variant(variant)

    def _check_layer(self) -> None:
        """Layer-specific checks of an adopted plain layer (``ValueError`` if unsupported)."""

    @classmethod
    def from_plain(
        cls: type[_R], layer: nn.Module, *, keep_frac: float = 0.1, variant: str = "different"
    ) -> _R:
        """A RAD layer sharing ``layer``'s parameters, buffers and hooks (options are
        validated before anything is built)."""
        keep = check_keep_frac(keep_frac)
        var = check_variant(variant)
        new = cls._adopt(layer)
        new._set_options(keep, var)
        new._check_layer()
        return new

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}, keep_frac={self.keep_frac}, variant={self.variant!r}"


class RADLinear(_RADMixin, nn.Linear):
    """``nn.Linear`` whose weight gradient is RAD's unbiased estimate (see the module doc).

    Same parameters and ``state_dict`` keys as ``nn.Linear``. Build directly
    (``RADLinear(in_f, out_f, keep_frac=0.1)``) or from a plain layer
    (``RADLinear.from_plain(linear, keep_frac=0.1)``, sharing its parameters).
    """

    plain_type = nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        keep_frac: float = 0.1,
        variant: str = "different",
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._set_options(keep_frac, variant)

    def forward(self, input: Tensor) -> Tensor:
        if not self._rad_active(self.weight):
            return super().forward(input)
        return _RADLinearFn.apply(input, self.weight, self.bias, self.keep_frac, self.variant)


class RADConv2d(_RADMixin, nn.Conv2d):
    """``nn.Conv2d`` whose weight gradient is RAD's unbiased estimate (see the module doc).

    Supports stride, dilation, groups, bias, numeric padding, ``padding="valid"``,
    ``padding="same"`` when ``dilation * (kernel - 1)`` is even in both dimensions (the
    symmetric case; otherwise ``ValueError`` at construction), every ``padding_mode`` (the
    input is padded before sampling, as the plain layer does) and unbatched ``(C, H, W)``
    inputs.
    """

    plain_type = nn.Conv2d

    def __init__(
        self, *args: Any, keep_frac: float = 0.1, variant: str = "different", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._set_options(keep_frac, variant)
        self._check_layer()

    def _check_layer(self) -> None:
        self._numeric_padding()

    def _numeric_padding(self) -> tuple[int, int]:
        """The symmetric padding that the backward's ``convolution_backward`` call needs."""
        if self.padding_mode != "zeros":
            return (0, 0)  # the input is padded explicitly before the convolution
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "same":
            pads = []
            for dil, ks in zip(self.dilation, self.kernel_size):
                total = dil * (ks - 1)
                if total % 2:
                    raise ValueError(
                        f"RADConv2d: padding='same' with kernel_size={self.kernel_size} and "
                        f"dilation={self.dilation} pads asymmetrically, which is not supported; "
                        "give explicit padding"
                    )
                pads.append(total // 2)
            return (pads[0], pads[1])
        p = self.padding
        assert isinstance(p, tuple)
        return (int(p[0]), int(p[1]))

    def _plain_conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The plain layer's convolution of an already padded-by-mode input."""
        padding: Any = (0, 0) if self.padding_mode != "zeros" else self.padding
        return F.conv2d(x, weight, bias, self.stride, padding, self.dilation, self.groups)

    def forward(self, input: Tensor) -> Tensor:
        if not self._rad_active(self.weight):
            return super().forward(input)
        x = input
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        out = _RADConv2dFn.apply(x, self.weight, self.bias, self, self._numeric_padding())
        return out.squeeze(0) if unbatched else out
