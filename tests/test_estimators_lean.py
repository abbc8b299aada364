"""Memory-lean exact layers: MaskReLU (1-bit mask) and LeanAvgPool2d (shape only)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tamegrad.estimators import (
    ActivationMeter,
    LeanAvgPool2d,
    MaskReLU,
    RADConv2d,
    convert,
    converted_layers,
    revert,
)
from tamegrad.estimators.lean import pack_bits, unpack_bits
from tamegrad.models import create_model


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])
def test_pack_unpack_round_trip(n: int) -> None:
    mask = torch.rand(n) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 8)
    assert torch.equal(unpack_bits(packed, (n,)), mask)


@pytest.mark.parametrize("inplace", [False, True])
def test_mask_relu_exact_and_one_bit(inplace: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    x[0, 0, 0, :2] = 0.0  # ties at zero take the plain gradient (0)
    g = torch.randn_like(x)
    outs, grads, saved = [], [], []
    for layer in (nn.ReLU(inplace=inplace), MaskReLU.from_plain(nn.ReLU(inplace=inplace))):
        leaf = x.clone().requires_grad_()
        with ActivationMeter() as m:
            out = layer(leaf * 1.0)  # a non-leaf, so in-place is allowed
        (gx,) = torch.autograd.grad(out, (leaf,), g)
        outs.append(out)
        grads.append(gx)
        saved.append(m.report().saved_bytes)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    assert saved[1] == math.ceil(x.numel() / 8)
    assert saved[0] >= x.numel() * 4  # the plain ReLU keeps its float output


@pytest.mark.parametrize(
    "opts",
    [
        {"kernel_size": 2},
        {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
        {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": False},
        {"kernel_size": (2, 3), "divisor_override": 5},
    ],
)
def test_lean_avg_pool_exact_and_stores_nothing(opts: dict) -> None:
    torch.manual_seed(0)
    plain = nn.AvgPool2d(**opts)
    lean = LeanAvgPool2d.from_plain(plain)
    for shape in ((2, 3, 7, 8), (3, 7, 8)):
        x = torch.randn(shape)
        g = torch.randn(plain(x).shape)
        res = []
        for layer in (plain, lean):
            leaf = x.clone().requires_grad_()
            with ActivationMeter() as m:
                out = layer(leaf * 1.0)
            res.append((out, torch.autograd.grad(out, (leaf,), g)[0], m.report().saved_bytes))
        assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][1], res[1][1])
        assert res[1][2] == 0 and res[0][2] > 0


def test_lean_layers_plain_without_grad() -> None:
    x = torch.randn(2, 3)
    relu = MaskReLU.from_plain(nn.ReLU())
    assert relu(x).grad_fn is None
    with torch.no_grad():
        assert relu(x.requires_grad_()).grad_fn is None


def test_convert_lean_and_rad_with_lean_on_the_paper_cnn() -> None:
    torch.manual_seed(0)
    model = create_model("rad-cnn", num_classes=10, input_shape=(3, 16, 16), width=4)
    x = torch.randn(6, 3, 16, 16)
    y = torch.randint(0, 10, (6,))

    def step() -> tuple[int, list[torch.Tensor]]:
        with ActivationMeter(model) as m:
            loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return m.report().activation_bytes, grads

    exact_bytes, exact_grads = step()
    convert(model, "lean")
    assert {type(m) for m in converted_layers(model).values()} == {MaskReLU, LeanAvgPool2d}
    lean_bytes, lean_grads = step()
    assert all(torch.equal(a, b) for a, b in zip(exact_grads, lean_grads))  # exact
    assert lean_bytes < exact_bytes
    revert(model)
    convert(model, "rad", keep_frac=0.1, lean=True)
    kinds = {type(m) for m in converted_layers(model).values()}
    assert kinds >= {MaskReLU, LeanAvgPool2d, RADConv2d}
    rad_bytes, _ = step()
    assert rad_bytes < 0.3 * exact_bytes
    revert(model)
    assert converted_layers(model) == {}
    with pytest.raises(ValueError, match="lean"):
        convert(model, "rad", lean="yes")


def test_rad_paper_cnn_matches_the_paper() -> None:
    """4 conv5x5 layers 16/32/32/32 with biases, 2 avg-pools, linear 2048 -> 10 (85,802 params)."""
    model = create_model("rad-cnn", num_classes=10, input_shape=(3, 32, 32))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 32, 32]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    assert model.fc.in_features == 2048
    assert sum(p.numel() for p in model.parameters()) == 85802
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
