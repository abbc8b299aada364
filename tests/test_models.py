"""Tests for tamegrad.models: shapes, parameter counts, init, option validation, trainability."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tamegrad.models import ResNet18, available_models, create_model, describe_model

pytestmark = pytest.mark.usefixtures("one_thread")


IMAGE_SHAPES = [(3, 32, 32), (1, 8, 8), (3, 8, 8), (1, 28, 28)]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_available_models() -> None:
    assert available_models() == ["char-lstm", "cnn", "gpt", "mlp", "rad-cnn", "resnet18"]
    for name in available_models():
        assert name in describe_model(name)


def test_resnet18_paper_size_has_11_17m_params() -> None:
    m = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32))
    assert n_params(m) == 11_173_962  # the standard CIFAR ResNet-18
    assert round(n_params(m) / 1e6, 2) == 11.17
    m100 = create_model("resnet18", num_classes=100, input_shape=(3, 32, 32), width=64)
    assert n_params(m100) == 11_173_962 + 512 * 90 + 90


def test_resnet18_architecture() -> None:
    m = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=16)
    assert isinstance(m, ResNet18)
    # stem: 3x3 stride-1 conv, no max-pool anywhere
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    widths, strides = [], []
    for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
        assert len(stage) == 2
        widths.append(stage[0].conv1.out_channels)
        strides.append(stage[0].conv1.stride[0])
    assert widths == [16, 32, 64, 128]
    assert strides == [1, 2, 2, 2]
    assert m.fc.in_features == 128
    # feature map sizes: 32 -> 32, 16, 8, 4
    x = torch.randn(2, 3, 32, 32)
    out = m.relu(m.bn1(m.conv1(x)))
    sizes = []
    for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
        out = stage(out)
        sizes.append(out.shape[-1])
    assert sizes == [32, 16, 8, 4]


@pytest.mark.parametrize("name", ["resnet18", "cnn", "mlp"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_image_models_output_shape(name: str, shape: tuple[int, int, int]) -> None:
    m = create_model(name, num_classes=7, input_shape=shape, width=8)
    m.eval()
    out = m(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def test_mlp_on_vectors_and_hidden_option() -> None:
    m = create_model("mlp", num_classes=4, input_shape=(20,), hidden=[5, 6, 7])
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (20, 5), (5, 6), (6, 7), (7, 4)
    ]
    assert m(torch.randn(2, 20)).shape == (2, 4)
    m2 = create_model("mlp", num_classes=3, input_shape=(1, 4, 4), width=9, depth=3)
    assert [x.out_features for x in m2.modules() if isinstance(x, nn.Linear)] == [9, 9, 9, 3]
    m3 = create_model("mlp", num_classes=3, input_shape=(5,), hidden=[])
    assert n_params(m3) == 5 * 3 + 3  # logistic regression


def test_char_lstm_shapes_and_options() -> None:
    m = create_model("char-lstm", num_classes=65, input_shape=(16,))
    assert m.lstm.hidden_size == 256 and m.lstm.num_layers == 2 and m.lstm.dropout == 0.0
    x = torch.randint(0, 65, (3, 16))
    out = m(x)
    assert out.shape == (3, 16, 65)
    small = create_model("char-lstm", num_classes=10, input_shape=(8,), width=12, embed_dim=5)
    assert small.lstm.hidden_size == 12 and small.embed.embedding_dim == 5
    alias = create_model("char-lstm", num_classes=10, input_shape=(8,), hidden=20)
    assert alias.lstm.hidden_size == 20
    with pytest.raises(ValueError, match="not both"):
        create_model("char-lstm", num_classes=10, input_shape=(8,), hidden=20, width=3)


def test_char_lstm_is_causal() -> None:
    torch.manual_seed(0)
    m = create_model("char-lstm", num_classes=11, input_shape=(10,), width=16)
    x = torch.randint(0, 11, (2, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 11  # change the future only
    with torch.no_grad():
        a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_unknown_name_lists_valid_names() -> None:
    valid = r"Unknown model 'resnet50'.*char-lstm, cnn, gpt, mlp, rad-cnn, resnet18"
    with pytest.raises(ValueError, match=valid):
        create_model("resnet50", num_classes=10, input_shape=(3, 32, 32))


def test_unknown_option_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"'cnn' does not accept option\(s\) dropout; valid"):
        create_model("cnn", num_classes=10, input_shape=(3, 32, 32), dropout=0.5)
    with pytest.raises(ValueError, match="zero_init_residual"):
        create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), bogus=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "resnet18", "input_shape": (32, 32)}, r"input_shape \(C, H, W\)"),
        ({"name": "cnn", "input_shape": (64,)}, r"input_shape \(C, H, W\)"),
        ({"name": "mlp", "input_shape": (3, 0, 4)}, "positive sizes"),
        ({"name": "mlp", "input_shape": (8,), "width": 0}, "width"),
        ({"name": "mlp", "input_shape": (8,), "num_classes": 0}, "num_classes"),
        ({"name": "mlp", "input_shape": (8,), "hidden": "64"}, "hidden"),
        ({"name": "cnn", "input_shape": (3, 8, 8), "depth": 0}, "depth"),
        ({"name": "char-lstm", "input_shape": (8,), "dropout": 1.5}, "dropout"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    kwargs = {"num_classes": 10, **kwargs}
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)


@pytest.mark.parametrize("name", available_models())
def test_no_dropout_by_default(name: str) -> None:
    shape = (12,) if name == "char-lstm" else (3, 16, 16)
    m = create_model(name, num_classes=5, input_shape=shape, width=8)
    assert not any(isinstance(x, nn.Dropout) for x in m.modules())
    if name == "char-lstm":
        assert m.lstm.dropout == 0.0


def test_kaiming_init() -> None:
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=64)
    conv = m.layer4[0].conv2  # 512 -> 512, 3x3: fan_out = 512 * 9
    expected = math.sqrt(2.0 / (512 * 9))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.02)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)
    mlp = create_model("mlp", num_classes=10, input_shape=(1000,), width=1000)
    first = mlp.net[1]
    assert first.weight.std().item() == pytest.approx(math.sqrt(2.0 / 1000), rel=0.02)
    assert torch.all(first.bias == 0)
    zero = create_model("resnet18", num_classes=10, input_shape=(3, 8, 8), width=4,
                        zero_init_residual=True)
    assert torch.all(zero.layer1[0].bn2.weight == 0)


@pytest.mark.parametrize("name", available_models())
def test_init_is_seeded(name: str) -> None:
    shape = (6,) if name == "char-lstm" else (1, 8, 8)
    torch.manual_seed(3)
    a = create_model(name, num_classes=4, input_shape=shape, width=8)
    torch.manual_seed(3)
    b = create_model(name, num_classes=4, input_shape=shape, width=8)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("name", available_models())
def test_every_model_can_fit_a_tiny_batch(name: str) -> None:
    torch.manual_seed(0)
    if name == "char-lstm":
        m = create_model(name, num_classes=6, input_shape=(8,), width=16, embed_dim=8)
        x = torch.randint(0, 6, (4, 8))
        y = torch.roll(x, -1, dims=1)
    elif name == "gpt":
        m = create_model(name, num_classes=6, input_shape=(8,), width=16, n_layer=1, n_head=2)
        x = torch.randint(0, 6, (4, 8))
        y = torch.roll(x, -1, dims=1)
    else:
        m = create_model(name, num_classes=3, input_shape=(1, 8, 8), width=4)
        x = torch.randn(12, 1, 8, 8)
        y = torch.arange(12) % 3
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)

    def loss_fn() -> torch.Tensor:
        out = m(x)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    first = loss_fn().item()
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < 0.5 * first
    # every parameter received a gradient
    assert all(p.grad is not None for p in m.parameters())
