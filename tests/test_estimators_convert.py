"""convert / revert: layer swapping by type and name pattern, parameter sharing, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tamegrad.estimators import (
    RADConv2d,
    RADLinear,
    available_methods,
    convert,
    converted_layers,
    get_method,
    register_method,
    revert,
)
from tamegrad.models import available_models, create_model

TOKEN_MODELS = {"char-lstm", "gpt"}  # models that take int64 tokens (B, T)


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name in TOKEN_MODELS:
        m = create_model(name, num_classes=11, input_shape=(6,), width=16)
        return m, torch.randint(0, 11, (3, 6))
    m = create_model(name, num_classes=10, input_shape=(3, 16, 16), width=8)
    return m, torch.randn(3, 3, 16, 16)


class UserNet(nn.Module):
    """A user's model: nested containers, a shared layer, a Linear subclass with its own forward."""

    class Scaled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(16, 16), nn.ReLU()) for _ in range(2)])
        self.shared = nn.Linear(16, 16)
        self.alias = self.shared  # the same module under a second name
        self.special = UserNet.Scaled(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean(1).flatten(1)  # (B, 16) from a 4x4 image
        for b in self.blocks:
            h = b(h)
        h = self.alias(self.shared(h))
        return self.head(self.special(h))


@pytest.mark.parametrize("name", available_models())
def test_round_trip_every_model(name: str) -> None:
    model, x = _model(name)
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}  # BN stats move in train
    model.eval()
    with torch.no_grad():
        ref = model(x)
    model.train()
    ref_train = model(x)
    model.load_state_dict(snapshot)

    out = convert(model, "rad", keep_frac=0.1)
    assert out is model
    conv = converted_layers(model)
    assert conv, name
    assert all(isinstance(m, (RADLinear, RADConv2d)) for m in conv.values())
    plain_left = [
        n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)
    ]
    assert plain_left == []
    assert list(model.state_dict()) == keys
    assert all(p is params[n] for n, p in model.named_parameters())
    # the forward pass is exact in training (only backward is randomised) and in eval
    assert torch.equal(model(x), ref_train)
    model.load_state_dict(snapshot)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    model.train()
    model(x).float().sum().backward()  # the estimator path runs end to end
    assert all(p.grad is not None for p in model.parameters())

    assert revert(model) is model
    assert converted_layers(model) == {}
    assert all(p is params[n] for n, p in model.named_parameters())
    assert list(model.state_dict()) == keys
    model.load_state_dict(snapshot)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_state_dict_loads_across_plain_and_converted() -> None:
    plain, x = _model("cnn")
    conv_model, _ = _model("cnn")
    for p in conv_model.parameters():
        p.data.add_(1.0)
    convert(conv_model, keep_frac=0.3)
    conv_model.load_state_dict(plain.state_dict())  # plain -> converted
    plain.eval()
    conv_model.eval()
    with torch.no_grad():
        assert torch.equal(conv_model(x), plain(x))
    fresh, _ = _model("cnn")
    for p in fresh.parameters():
        p.data.mul_(0.5)
    fresh.load_state_dict(conv_model.state_dict())  # converted -> plain
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), plain(x))


def test_user_module_shared_subclass_and_patterns() -> None:
    torch.manual_seed(0)
    net = UserNet()
    x = torch.randn(2, 2, 4, 4)
    ref = net(x)
    convert(net, keep_frac=0.5, variant="same", exclude="head")
    conv = converted_layers(net)
    # exact-type matching: the Linear subclass with its own forward is left alone
    assert type(net.special) is UserNet.Scaled
    assert type(net.head) is nn.Linear
    assert net.alias is net.shared and isinstance(net.shared, RADLinear)
    assert net.shared.variant == "same" and net.shared.keep_frac == 0.5
    assert set(conv) == {"conv", "blocks.0.0", "blocks.1.0", "shared"}
    assert torch.equal(net(x), ref)
    revert(net)
    assert net.alias is net.shared and type(net.shared) is nn.Linear

    # globs cross dots, regexes match the whole name
    convert(net, include=["blocks.*"], exclude="re:blocks\\.1\\..*")
    assert set(converted_layers(net)) == {"blocks.0.0"}
    revert(net)
    convert(net, include="re:(conv|head)")
    assert set(converted_layers(net)) == {"conv", "head"}
    revert(net)


def test_root_layer_and_hooks_preserved() -> None:
    lin = nn.Linear(5, 3)
    calls: list[int] = []
    lin.register_forward_hook(lambda m, a, o: calls.append(1))
    rad = convert(lin, keep_frac=0.2)
    assert isinstance(rad, RADLinear) and rad.weight is lin.weight
    rad(torch.randn(2, 5))
    back = revert(rad)
    assert type(back) is nn.Linear and back.weight is lin.weight
    back(torch.randn(2, 5))
    assert len(calls) == 2


def test_optimizer_built_before_convert_updates_the_converted_model() -> None:
    model, x = _model("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    convert(model, keep_frac=0.5)
    model(x).sum().backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, math.nan, math.inf, "0.1", None, True])
def test_invalid_keep_frac(bad: object) -> None:
    model, _ = _model("mlp")
    with pytest.raises(ValueError, match="keep_frac"):
        convert(model, keep_frac=bad)
    assert converted_layers(model) == {}  # nothing swapped


def test_errors_name_the_problem() -> None:
    model, _ = _model("cnn")
    with pytest.raises(ValueError, match=r"Unknown estimator method 'radd'.*rad"):
        convert(model, "radd")
    with pytest.raises(ValueError, match="nosuch"):
        convert(model, include=["features.*", "nosuch.*"])
    with pytest.raises(ValueError, match="variant"):
        convert(model, variant="sometimes")
    with pytest.raises(ValueError, match="keep_fraction"):
        convert(model, keep_fraction=0.1)
    with pytest.raises(ValueError, match="include"):
        convert(model, include=["re:(unclosed"])
    with pytest.raises(ValueError, match="no layer"):
        convert(model, exclude="*")
    with pytest.raises(ValueError, match="no layer"):
        convert(nn.Sequential(nn.ReLU()))
    assert converted_layers(model) == {}
    convert(model)
    with pytest.raises(ValueError, match="revert"):
        convert(model)
    with pytest.raises(ValueError, match=r"nn\.Module"):
        convert("model")  # type: ignore[arg-type]
    assert revert(nn.ReLU()).__class__ is nn.ReLU  # nothing to revert: unchanged


def test_register_method_and_defaults() -> None:
    assert "rad" in available_methods()
    assert get_method("RAD").name == "rad"

    def factory(layer: nn.Linear, *, keep_frac: float = 0.1) -> RADLinear:
        return RADLinear.from_plain(layer, keep_frac=keep_frac, variant="projection")

    register_method(
        "test-proj", {nn.Linear: factory}, default_exclude="fc", options={"keep_frac": 0.25},
        overwrite=True,
    )
    with pytest.raises(ValueError, match="already registered"):
        register_method("test-proj", {nn.Linear: factory})
    with pytest.raises(ValueError, match="factories"):
        register_method("test-bad", {int: factory}, overwrite=True)  # type: ignore[dict-item]
    model, _ = _model("cnn")
    with pytest.raises(ValueError, match="no layer"):  # cnn's only Linear, fc, is excluded
        convert(model, "test-proj")
    convert(model, "test-proj", exclude=())  # an explicit exclude replaces the default
    assert set(converted_layers(model)) == {"fc"}
    model2, _ = _model("mlp")
    convert(model2, "test-proj")
    assert {m.keep_frac for m in converted_layers(model2).values()} == {0.25}
