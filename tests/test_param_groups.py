"""Param groups built from a model (timm / nanoGPT style) and option checks from signatures."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
import torch
from torch import nn

from tamegrad.optim import check_options, create, list_optimizers, module_blocks, param_groups


class Tiny(nn.Module):
    """Linear + norms + a scalar, a frozen layer and a weight tied between two modules."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(5, 4)
        self.body = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.ReLU())
        self.norm = nn.BatchNorm1d(3)
        self.head = nn.Linear(3, 5, bias=False)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.temperature = nn.Parameter(torch.tensor(1.0))
        self.tied = nn.Linear(3, 5, bias=False)
        self.tied.weight = self.head.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.body(self.embed(idx)))
        return (self.head(h) + self.frozen(h).sum()) * self.temperature


def _ids(ps: Iterable[Any]) -> list[int]:
    return [id(p) for p in ps]


def test_module_blocks_hold_each_trainable_parameter_once_in_model_order() -> None:
    m = Tiny()
    blocks = module_blocks(m)
    assert [n for n, _ in blocks] == ["", "embed", "body.0", "body.1", "norm", "head"]
    flat = [p for _, ps in blocks for p in ps]
    trainable = [p for p in m.parameters() if p.requires_grad]  # parameters() dedupes too
    assert _ids(flat) == _ids(trainable)
    assert _ids(blocks[0][1]) == [id(m.temperature)]


def test_param_groups_decay_only_matrices_unless_asked() -> None:
    m = Tiny()
    decay, no_decay = param_groups(m, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert set(decay) == set(no_decay) == {"params", "weight_decay"}
    assert _ids(decay["params"]) == _ids([m.embed.weight, m.body[0].weight, m.head.weight])
    assert _ids(no_decay["params"]) == _ids(
        [
            m.temperature,
            m.body[0].bias,
            m.body[1].weight,
            m.body[1].bias,
            m.norm.weight,
            m.norm.bias,
        ]
    )
    (everything,) = param_groups(m, weight_decay=0.1, no_decay_1d=False)
    assert _ids(everything["params"]) == _ids([p for p in m.parameters() if p.requires_grad])


def test_param_groups_per_module() -> None:
    m = Tiny()
    groups = param_groups(m, weight_decay=0.1, per_module=True)
    expected = [
        ([m.temperature], 0.0),
        ([m.embed.weight], 0.1),
        ([m.body[0].weight], 0.1),
        ([m.body[0].bias], 0.0),
        ([m.body[1].weight, m.body[1].bias], 0.0),
        ([m.norm.weight, m.norm.bias], 0.0),
        ([m.head.weight], 0.1),
    ]
    assert [(_ids(g["params"]), g["weight_decay"]) for g in groups] == [
        (_ids(ps), wd) for ps, wd in expected
    ]
    plain = param_groups(m, weight_decay=0.1, per_module=True, no_decay_1d=False)
    assert [_ids(g["params"]) for g in plain] == [_ids(ps) for _, ps in module_blocks(m)]


def test_param_groups_validate() -> None:
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(Tiny(), weight_decay=-1.0)
    with pytest.raises(ValueError, match="no_decay_1d"):
        param_groups(Tiny(), weight_decay=0.1, no_decay_1d=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        module_blocks([torch.zeros(1)])  # type: ignore[arg-type]


def _train(opt: torch.optim.Optimizer, m: Tiny, steps: int = 4) -> list[torch.Tensor]:
    idx = torch.arange(8) % 5
    for _ in range(steps):
        opt.zero_grad()
        m(idx).square().mean().backward()
        opt.step()
    return [p.detach().clone() for p in m.parameters()]


@pytest.mark.parametrize("name", ["sgd", "adamw", "tr-adamw", "trsgd"])
def test_create_from_a_model_keeps_the_default(name: str) -> None:
    a, b = Tiny(), Tiny()
    via_params = _train(create(name, a.parameters(), lr=0.01, weight_decay=0.1), a)
    via_model = _train(create(name, b, lr=0.01, weight_decay=0.1), b)
    assert all(torch.equal(x, y) for x, y in zip(via_params, via_model))


@pytest.mark.parametrize("name", ["adamw", "tr-adamw"])
def test_create_no_decay_1d_leaves_biases_and_norms_undecayed(name: str) -> None:
    # zero gradients: AdamW's update is its decoupled decay alone, w *= 1 - lr * wd
    m = Tiny()
    extra = {"lambda_w": 0.0} if name.startswith("tr") else {}
    opt = create(name, m, lr=0.1, no_decay_1d=True, **extra)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]  # adamw's default
    before = {id(p): p.detach().clone() for p in m.parameters()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for p in m.parameters():
        if not p.requires_grad:
            continue
        factor = 1 - 0.1 * 0.01 if p.ndim >= 2 else 1.0
        torch.testing.assert_close(p.detach(), before[id(p)] * factor, rtol=0, atol=0)


def test_create_per_module_and_errors() -> None:
    m = Tiny()
    opt = create("sgd", m, lr=0.1, weight_decay=1e-3, per_module=True)
    assert len(opt.param_groups) == 6  # one per module holding parameters
    assert [g["lr"] for g in opt.param_groups] == [0.1] * 6
    with pytest.raises(ValueError, match="pass the model"):
        create("sgd", m.parameters(), lr=0.1, no_decay_1d=True)
    with pytest.raises(ValueError, match="Invalid per_module"):
        create("sgd", m, lr=0.1, per_module="yes")


# ----------------------------------------------------------------------------- check_options
@pytest.mark.parametrize("name", list_optimizers())
def test_check_options_names_unknown_keys_for_every_optimizer(name: str) -> None:
    check_options(name, {"lr": 0.1, "weight_decay": 0.0, "no_decay_1d": True})
    with pytest.raises(ValueError, match=rf"'{name}' does not accept bogus_a, bogus_b; accepted:"):
        check_options(name, {"lr": 0.1, "bogus_b": 1, "bogus_a": 2})


def test_check_options_follows_composites_to_their_base_and_builds_nothing() -> None:
    check_options("tr-sgd", {"momentum": 0.9, "inner_steps": 3, "nesterov": True})
    check_options("lookahead-adam", {"k": 3, "betas": (0.9, 0.99)})
    with pytest.raises(ValueError, match="does not accept momentum"):
        check_options("tr-adam", {"momentum": 0.9})
    with pytest.raises(ValueError, match="does not accept inner_steps"):
        check_options("lookahead-sgd", {"inner_steps": 3})
    with pytest.raises(ValueError, match="Unknown optimizer 'nope'"):
        check_options("nope", {})
    # values are the constructor's business: nothing is built, so nothing checks them here
    check_options("sgd", {"lr": -1.0, "momentum": "fast"})
    with pytest.raises(ValueError, match="learning rate"):
        create("sgd", [torch.zeros(1, requires_grad=True)], lr=-1.0)
    # create() itself names the composite and the union of keys
    with pytest.raises(ValueError, match="'tr-adam' does not accept momentum"):
        create("tr-adam", [torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
