"""RAD layers: exact forward / input gradient, unbiased weight gradient, stored bytes."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tamegrad.estimators import (
    VARIANTS,
    ActivationMeter,
    RADConv2d,
    RADLinear,
    kept_count,
)

torch.set_num_threads(1)


def _linear(bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(12, 5, bias=bias)


def _conv(**kw: object) -> nn.Conv2d:
    torch.manual_seed(0)
    opts: dict = {"stride": 2, "padding": 1, "groups": 2, **kw}
    return nn.Conv2d(4, 6, 3, **opts)


def _grads(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(output, input grad, weight grad) of ``layer`` for output cotangent ``g``."""
    x = x.detach().requires_grad_()
    out = layer(x)
    gx, gw = torch.autograd.grad(out, (x, layer.weight), g)
    return out, gx, gw


def _plain_grads(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    plain = layer.to_plain() if hasattr(layer, "to_plain") else layer
    return _grads(plain, x, g)


CASES: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("linear", _linear, (6, 12)),
    ("linear-3d", lambda: _linear(bias=False), (2, 3, 12)),
    ("conv-stride-groups", _conv, (3, 4, 6, 6)),
    ("conv-dilation-nobias", lambda: _conv(stride=1, dilation=2, padding=2, bias=False),
     (2, 4, 5, 5)),
]


def _rad(make: Callable[[], nn.Module], keep: float, variant: str) -> nn.Module:
    plain = make()
    cls = RADLinear if isinstance(plain, nn.Linear) else RADConv2d
    return cls.from_plain(plain, keep_frac=keep, variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("case", "make", "shape"), CASES, ids=[c[0] for c in CASES])
def test_weight_grad_unbiased_monte_carlo(
    case: str, make: Callable[[], nn.Module], shape: tuple[int, ...], variant: str
) -> None:
    """mean over N draws of the RAD weight gradient == exact, |mean - exact| <= 5 se elementwise
    with se estimated from the draws (N = 1500, fixed seeds)."""
    layer = _rad(make, 0.3, variant)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    layer.double()
    plain = layer.to_plain()
    out = plain(x)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (exact,) = torch.autograd.grad(out, (plain.weight,), g)
    torch.manual_seed(2)
    n = 1500
    draws = torch.stack([torch.autograd.grad(layer(x), (layer.weight,), g)[0] for _ in range(n)])
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    assert (se > 0).float().mean() > 0.9, "the estimator should be random"
    z = (mean - exact).abs() / se.clamp_min(1e-12)
    assert z.max().item() <= 5.0, (case, variant, z.max().item())
    # and it is not the exact gradient (a test of unbiasedness that cannot fail would be useless)
    assert not torch.allclose(draws[0], exact)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("case", "make", "shape"), CASES, ids=[c[0] for c in CASES])
def test_forward_and_input_grad_bit_identical(
    case: str, make: Callable[[], nn.Module], shape: tuple[int, ...], variant: str
) -> None:
    layer = _rad(make, 0.1, variant)
    x = torch.randn(shape)
    g = torch.randn(layer.to_plain()(x).shape)
    out, gx, _ = _grads(layer, x, g)
    out0, gx0, _ = _plain_grads(layer, x, g)
    assert torch.equal(out, out0)
    assert torch.equal(gx, gx0)
    if layer.bias is not None:
        out = layer(x)
        (gb,) = torch.autograd.grad(out, (layer.bias,), g)
        out0 = layer.to_plain()(x)
        (gb0,) = torch.autograd.grad(out0, (layer.bias,), g)
        torch.testing.assert_close(gb, gb0, rtol=1e-6, atol=1e-6)


def test_different_sample_variance_below_same_sample() -> None:
    """Batch of 32: per-example sampling averages its noise over the batch; one shared index
    set does not. Compare total variance of the weight gradient over 300 draws each, with
    post-ReLU-like inputs and output gradients that agree across examples (as in training,
    where the per-example gradients share a mean; with independent random output gradients
    the two variances coincide, since the shared-index errors are then uncorrelated)."""
    torch.manual_seed(0)
    for make, shape in ((lambda: nn.Linear(64, 8), (32, 64)), (lambda: _conv(), (32, 4, 8, 8))):
        x = torch.randn(shape).abs()
        var = {}
        out_shape = make()(x).shape
        g = torch.randn(1, *out_shape[1:]) + 0.3 * torch.randn(out_shape)
        for variant in ("different", "same"):
            layer = _rad(make, 0.1, variant)
            draws = torch.stack(
                [torch.autograd.grad(layer(x), (layer.weight,), g)[0] for _ in range(300)]
            )
            var[variant] = draws.var(0).sum().item()
        assert var["different"] < 0.5 * var["same"], var


def _saved(layer: nn.Module, x: torch.Tensor) -> int:
    with ActivationMeter(layer) as meter:
        out = layer(x)
    del out
    return meter.report().activation_bytes


@pytest.mark.parametrize("variant", VARIANTS)
def test_saved_bytes_exact_bound(variant: str) -> None:
    """A RAD layer stores rows * k values in the compute dtype plus an 8-byte seed, exactly;
    at keep_frac 0.1 that is <= 0.15x what the plain layer stores (its whole input)."""
    torch.manual_seed(0)
    lin = nn.Linear(100, 10)
    x = torch.randn(32, 100, requires_grad=True)
    rad = RADLinear.from_plain(lin, keep_frac=0.1, variant=variant)
    plain = _saved(lin, x)
    assert plain == x.numel() * 4  # addmm saves its input (the weight is a parameter)
    bound = 32 * kept_count(0.1, 100) * 4 + 8
    assert _saved(rad, x) == bound
    assert bound <= 0.15 * plain

    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(16, 8, 20, 20, requires_grad=True)
    rc = RADConv2d.from_plain(conv, keep_frac=0.1, variant=variant)
    plain = _saved(conv, x)
    assert plain == x.numel() * 4
    bound = 16 * 8 * kept_count(0.1, 400) * 4 + 8
    assert _saved(rc, x) == bound
    assert bound <= 0.15 * plain


def test_plain_behaviour_in_eval_no_grad_frozen_and_keep_one() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(10, 4)
    rad = RADLinear.from_plain(lin, keep_frac=0.2)
    x = torch.randn(3, 10, requires_grad=True)
    full = x.numel() * 4
    rad.eval()
    assert torch.equal(rad(x), F.linear(x, lin.weight, lin.bias))
    assert _saved(rad, x) == full  # the plain layer's autograd path, nothing extra
    rad.train()
    with torch.no_grad():
        assert _saved(rad, x) == 0
    rad.weight.requires_grad_(False)  # lin shares the weight: both frozen
    assert _saved(rad, x) == _saved(lin, x) == 0  # addmm keeps x only for the weight grad
    assert "RAD" not in type(rad(x).grad_fn).__name__
    rad.weight.requires_grad_(True)
    assert "RAD" in type(rad(x).grad_fn).__name__
    rad.keep_frac = 1.0
    assert "RAD" not in type(rad(x).grad_fn).__name__


def test_seed_reproducible_under_manual_seed_and_rng_restore() -> None:
    rc = _rad(_conv, 0.2, "different")
    x = torch.randn(2, 4, 6, 6)
    g = torch.randn(rc.to_plain()(x).shape)

    def wgrad() -> torch.Tensor:
        return torch.autograd.grad(rc(x), (rc.weight,), g)[0]

    torch.manual_seed(5)
    a = wgrad()
    state = torch.get_rng_state()
    b = wgrad()
    torch.manual_seed(5)
    assert torch.equal(wgrad(), a)
    torch.set_rng_state(state)
    assert torch.equal(wgrad(), b)
    assert not torch.equal(a, b)


def test_autocast_bf16_matches_plain_autocast() -> None:
    torch.manual_seed(0)
    for make, shape in ((lambda: nn.Linear(16, 8), (4, 16)), (_conv, (2, 4, 6, 6))):
        layer = _rad(make, 0.25, "different")
        x = torch.randn(shape)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out0 = layer.to_plain()(x)
        g = torch.randn(out0.shape).to(torch.bfloat16)
        xs = [x.clone().requires_grad_() for _ in range(2)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(xs[0])
            out0 = layer.to_plain()(xs[1])
        assert out.dtype == torch.bfloat16 and torch.equal(out, out0)
        (gx,) = torch.autograd.grad(out, (xs[0],), g)
        (gx0,) = torch.autograd.grad(out0, (xs[1],), g)
        assert gx.dtype == torch.float32 and torch.equal(gx, gx0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        (gw,) = torch.autograd.grad(out, (layer.weight,), g)
        assert gw.dtype == torch.float32 and torch.isfinite(gw).all()
        # stored values are bf16: half the float32 bytes
        rows = math.prod(shape[:-1]) if len(shape) == 2 else shape[0] * shape[1]
        d = shape[-1] if len(shape) == 2 else shape[2] * shape[3]
        with torch.autocast("cpu", dtype=torch.bfloat16), ActivationMeter(layer) as m:
            out = layer(x)
        assert m.report().activation_bytes == rows * kept_count(0.25, d) * 2 + 8


@pytest.mark.parametrize(
    "opts",
    [
        {"padding": "same"},
        {"padding": "valid", "stride": 1},
        {"padding": 1, "padding_mode": "reflect"},
        {"padding": (1, 2), "padding_mode": "circular", "stride": (1, 2)},
        {"padding": "same", "dilation": 2, "stride": 1},
    ],
)
def test_conv_options(opts: dict) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, groups=2, **{"stride": 1, **opts})
    rc = RADConv2d.from_plain(conv, keep_frac=0.3)
    for shape in ((2, 4, 7, 7), (4, 7, 7)):  # batched and unbatched
        x = torch.randn(shape)
        g = torch.randn(conv(x).shape)
        out, gx, gw = _grads(rc, x, g)
        out0, gx0, gw0 = _grads(conv, x, g)
        assert torch.equal(out, out0) and torch.equal(gx, gx0)
        assert gw.shape == gw0.shape


def test_conv_rejects_asymmetric_same_padding() -> None:
    conv = nn.Conv2d(2, 2, 4, padding="same")
    with pytest.raises(ValueError, match="asymmetric"):
        RADConv2d.from_plain(conv)
    with pytest.raises(ValueError, match="asymmetric"):
        RADConv2d(2, 2, (3, 4), padding="same")


@pytest.mark.parametrize("bad", [0.0, -1, 1.01, math.nan, "a", None, False])
def test_invalid_options(bad: object) -> None:
    with pytest.raises(ValueError, match="keep_frac"):
        RADLinear(3, 2, keep_frac=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variant"):
        RADConv2d(2, 2, 3, variant="per-pixel")


def test_kept_count() -> None:
    assert kept_count(0.1, 100) == 10
    assert kept_count(0.7, 10) == 7  # 0.7 * 10 = 7.000000000000001 in floating point
    assert kept_count(0.1, 1024) == 103
    assert kept_count(0.001, 10) == 1
    assert kept_count(1.0, 5) == 5


def test_constructor_and_repr() -> None:
    lin = RADLinear(4, 3, keep_frac=0.5, variant="projection")
    assert list(lin.state_dict()) == list(nn.Linear(4, 3).state_dict())
    assert "keep_frac=0.5" in repr(lin) and "projection" in repr(lin)
    conv = RADConv2d(2, 3, 3, padding=1, keep_frac=0.2)
    assert list(conv.state_dict()) == list(nn.Conv2d(2, 3, 3).state_dict())
    assert type(conv.to_plain()) is nn.Conv2d and conv.to_plain().weight is conv.weight


def test_rad_model_fits_a_fixed_batch() -> None:
    """End to end: the paper's CNN with RAD (+ lean layers) drives the training loss of a fixed
    batch down (a sign or scale error in the weight gradient would stall or diverge it)."""
    from tamegrad.estimators import convert
    from tamegrad.models import create_model

    torch.manual_seed(0)
    model = create_model("rad-cnn", num_classes=4, input_shape=(3, 8, 8), width=4)
    convert(model, "rad", keep_frac=0.3, lean=True)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
