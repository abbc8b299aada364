"""Tests for the paper's baselines: NormalizedSGD and ClippedSGD (tamegrad.optim.normalized)."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import torch

from tamegrad.optim.normalized import ClippedSGD, NormalizedSGD, global_norm, register_all

SHAPES = [(5, 3), (7,), (2, 2, 3)]


def make_params(
    seed: int = 0, dtypes: tuple[torch.dtype, ...] = (torch.float32,)
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(s, generator=g, dtype=torch.float64).to(dtypes[i % len(dtypes)])
        for i, s in enumerate(SHAPES)
    ]


def noisy_grads(params: list[torch.Tensor], t: int, scale: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(500 + t)
    return [
        scale * (p.detach() + torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
        for p in params
    ]


def run(opt: torch.optim.Optimizer, params: list[torch.Tensor], start: int, stop: int) -> None:
    for t in range(start, stop):
        for p, g in zip(params, noisy_grads(params, t)):
            p.grad = g
        opt.step()


def assert_all_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b):
        assert torch.equal(x, y), (x - y).abs().max().item()


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


# --------------------------------------------------------------------------- NormalizedSGD


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_normalized_step_has_norm_exactly_lr(foreach: bool, momentum: float) -> None:
    lr = 0.3
    params = make_params(0, (torch.float64,))
    opt = NormalizedSGD(params, lr=lr, momentum=momentum, foreach=foreach)
    for t in range(10):
        grads = noisy_grads(params, t, scale=10.0 ** (t % 5 - 2))  # norms from 1e-2 to 1e2
        for p, g in zip(params, grads):
            p.grad = g
        before = flat(params)
        opt.step()
        step = flat(params) - before
        assert step.norm().item() == pytest.approx(lr, rel=1e-12)
        if momentum == 0:  # direction is the (global) gradient direction
            g = flat(grads)
            torch.testing.assert_close(step, -lr * g / g.norm(), rtol=1e-10, atol=1e-15)


def test_normalized_step_norm_float32() -> None:
    params = make_params(1)
    opt = NormalizedSGD(params, lr=0.01)
    for p, g in zip(params, noisy_grads(params, 0, scale=1e4)):
        p.grad = g
    before = flat(params)
    opt.step()
    assert (flat(params) - before).norm().item() == pytest.approx(0.01, rel=1e-4)


@pytest.mark.parametrize("foreach", [False, True])
def test_normalized_zero_gradient_is_a_zero_step(foreach: bool) -> None:
    params = make_params(2)
    before = [p.clone() for p in params]
    opt = NormalizedSGD(params, lr=0.1, foreach=foreach)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert_all_equal(params, before)


def test_normalized_norm_is_per_group() -> None:
    params = make_params(3, (torch.float64,))
    opt = NormalizedSGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.2}], lr=0.1)
    before = [p.clone() for p in params]
    for p, g in zip(params, noisy_grads(params, 0)):
        p.grad = g
    opt.step()
    assert (params[0] - before[0]).norm().item() == pytest.approx(0.1, rel=1e-12)
    rest = flat(params[1:]) - flat(before[1:])
    assert rest.norm().item() == pytest.approx(0.2, rel=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
def test_normalized_momentum_equals_normalised_ema(nesterov: bool) -> None:
    # heavy-ball buffer (torch SGD) and an EMA buffer differ by a constant factor, which the
    # normalisation removes
    mu, lr, wd = 0.9, 0.05, 0.01
    params = make_params(4, (torch.float64,))
    ref = [p.clone() for p in params]
    opt = NormalizedSGD(params, lr=lr, momentum=mu, weight_decay=wd, nesterov=nesterov)
    ema = [torch.zeros_like(p) for p in ref]
    for t in range(15):
        for p, g in zip(params, noisy_grads(params, t)):
            p.grad = g
        opt.step()
        grads = [g + wd * w for g, w in zip(noisy_grads(ref, t), ref)]
        ema = [mu * m + (1 - mu) * g for m, g in zip(ema, grads)]
        d = [(1 - mu) * g + mu * m for g, m in zip(grads, ema)] if nesterov else ema
        n = flat(d).norm()
        ref = [w - lr * x / n for w, x in zip(ref, d)]
    for a, b in zip(params, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- ClippedSGD

CLIP_CONFIGS: list[dict[str, Any]] = [
    {"momentum": 0.0},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    {"momentum": 0.5, "weight_decay": 0.1, "maximize": True},
]


@pytest.mark.parametrize(
    "cfg", CLIP_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("max_norm", [0.1, 1e6])  # clipping active / inactive
@pytest.mark.parametrize("foreach", [False, True])
def test_clipped_sgd_equals_clip_grad_norm_then_sgd(
    cfg: dict[str, Any], max_norm: float, foreach: bool
) -> None:
    dtypes = (torch.float32, torch.float64, torch.float32)
    pa, pb = make_params(5, dtypes), make_params(5, dtypes)
    ours = ClippedSGD(pa, lr=0.05, max_norm=max_norm, foreach=foreach, **cfg)
    sgd = torch.optim.SGD(pb, lr=0.05, foreach=foreach, **cfg)
    for t in range(15):
        grads = noisy_grads(pa, t, scale=3.0)
        for p, g in zip(pa, grads):
            p.grad = g.clone()
        for p, g in zip(pb, grads):
            p.grad = g.clone()
        ours.step()
        for p, g in zip(pa, grads):
            assert torch.equal(p.grad, g)  # p.grad untouched
        torch.nn.utils.clip_grad_norm_(pb, max_norm)
        sgd.step()
        for a, b in zip(pa, pb):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert_all_equal(pa, pb)  # and in fact bit for bit


def test_clipped_sgd_clips_each_group_by_its_own_norm() -> None:
    pa, pb = make_params(6), make_params(6)
    ours = ClippedSGD(
        [{"params": pa[:1], "max_norm": 0.2}, {"params": pa[1:]}], lr=0.1, momentum=0.9
    )
    sgd = torch.optim.SGD(pb, lr=0.1, momentum=0.9)
    for t in range(5):
        for p, g in zip(pa, noisy_grads(pa, t, 4.0)):
            p.grad = g
        for p, g in zip(pb, noisy_grads(pb, t, 4.0)):
            p.grad = g
        ours.step()
        torch.nn.utils.clip_grad_norm_(pb[:1], 0.2)
        torch.nn.utils.clip_grad_norm_(pb[1:], 1.0)
        sgd.step()
    assert_all_equal(pa, pb)


# --------------------------------------------------------------------------- shared API

BOTH: list[tuple[type[torch.optim.Optimizer], dict[str, Any]]] = [
    (NormalizedSGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    (NormalizedSGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True}),
    (ClippedSGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01, "max_norm": 0.5}),
    (ClippedSGD, {"lr": 0.1, "max_norm": 0.5, "maximize": True}),
]


@pytest.mark.parametrize(("cls", "hp"), BOTH)
def test_foreach_and_loop_agree_bitwise(cls: Any, hp: dict[str, Any]) -> None:
    dtypes = (torch.float32, torch.float64, torch.float32)
    pa, pb = make_params(7, dtypes), make_params(7, dtypes)
    oa, ob = cls(pa, foreach=False, **hp), cls(pb, foreach=True, **hp)
    for t in range(50):
        grads = noisy_grads(pa, t)
        for p, g in zip(pa, grads):
            p.grad = g.clone()
        for p, g in zip(pb, grads):
            p.grad = g.clone()
        oa.step()
        ob.step()
        assert_all_equal(pa, pb)
        for p, g in zip(pa, grads):
            assert torch.equal(p.grad, g)


@pytest.mark.parametrize(("cls", "hp"), BOTH)
def test_state_dict_round_trip_and_deepcopy(cls: Any, hp: dict[str, Any]) -> None:
    ref = make_params(8)
    run(cls(ref, **hp), ref, 0, 12)

    params = make_params(8)
    opt = cls(params, **hp)
    run(opt, params, 0, 5)
    buf = io.BytesIO()
    torch.save({"params": [p.clone() for p in params], "optim": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = ckpt["params"]
    opt2 = cls(resumed, **hp)
    opt2.load_state_dict(ckpt["optim"])
    run(opt2, resumed, 5, 12)
    assert_all_equal(resumed, ref)

    dup = copy.deepcopy(opt)
    dup_params = dup.param_groups[0]["params"]
    run(dup, dup_params, 5, 12)
    assert_all_equal(dup_params, ref)


@pytest.mark.parametrize("cls", [NormalizedSGD, ClippedSGD])
def test_api_closure_grad_none_sparse_lr_zero(cls: Any) -> None:
    a = torch.randn(4, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    c = torch.randn(2, requires_grad=True)
    b0, c0 = b.detach().clone(), c.detach().clone()
    opt = cls([{"params": [a, b]}, {"params": [c], "lr": 0.0}], lr=0.1, momentum=0.9)

    def closure() -> float:
        opt.zero_grad()
        loss = (a**2).sum() + (c**2).sum()
        loss.backward()
        return float(loss.detach())

    expected = float((a.detach() ** 2).sum() + (c.detach() ** 2).sum())
    assert opt.step(closure) == expected
    assert torch.equal(b.detach(), b0) and len(opt.state[b]) == 0  # grad None: skipped
    assert torch.equal(c.detach(), c0)  # lr 0 group does not move
    assert "momentum_buffer" in opt.state[a]

    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt_s = cls(emb.parameters(), lr=0.1)
    emb(torch.tensor([0, 1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt_s.step()


def test_tensor_lr_matches_float_lr() -> None:
    for cls in (NormalizedSGD, ClippedSGD):
        pa, pb = make_params(9), make_params(9)
        run(cls(pa, lr=torch.tensor(0.05), momentum=0.9), pa, 0, 5)
        run(cls(pb, lr=0.05, momentum=0.9), pb, 0, 5)
        assert_all_equal(pa, pb)


@pytest.mark.parametrize(
    ("cls", "kwargs", "name", "value"),
    [
        (NormalizedSGD, {"lr": -0.1}, "lr", "-0.1"),
        (NormalizedSGD, {"lr": float("nan")}, "lr", "nan"),
        (NormalizedSGD, {"lr": 0.1, "momentum": 1.0}, "momentum", "1.0"),
        (NormalizedSGD, {"lr": 0.1, "momentum": -0.5}, "momentum", "-0.5"),
        (NormalizedSGD, {"lr": 0.1, "weight_decay": -1.0}, "weight_decay", "-1.0"),
        (NormalizedSGD, {"lr": 0.1, "eps": float("nan")}, "eps", "nan"),
        (NormalizedSGD, {"lr": 0.1, "eps": 0.0}, "eps", "0.0"),
        (NormalizedSGD, {"lr": 0.1, "nesterov": True}, "nesterov", "momentum=0.0"),
        (ClippedSGD, {"lr": 0.1, "max_norm": 0.0}, "max_norm", "0.0"),
        (ClippedSGD, {"lr": 0.1, "max_norm": float("nan")}, "max_norm", "nan"),
        (ClippedSGD, {"lr": 0.1, "momentum": float("nan")}, "momentum", "nan"),
        (ClippedSGD, {"lr": -1.0}, "lr", "-1.0"),
        (ClippedSGD, {"lr": 0.1, "foreach": "yes"}, "foreach", "yes"),
    ],
)
def test_invalid_hyperparameters_raise_value_error_naming_them(
    cls: Any, kwargs: dict[str, Any], name: str, value: str
) -> None:
    with pytest.raises(ValueError) as err:
        cls([torch.zeros(2)], **kwargs)
    assert name in str(err.value) and value in str(err.value)
    opt = cls([torch.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match=name.replace("[", r"\[")):
        opt.add_param_group({"params": [torch.zeros(3)], "lr": 0.1, **kwargs})


def test_global_norm_matches_torch() -> None:
    ts = make_params(10, (torch.float32, torch.float64))
    for foreach in (False, True):
        assert torch.equal(
            global_norm(ts, foreach=foreach), torch.nn.utils.get_total_norm(ts, foreach=foreach)
        )


def test_register_all_factories_accept_lr_and_weight_decay() -> None:
    specs: dict[str, tuple[Any, dict[str, Any]]] = {}

    def register(name: str, factory: Any, description: str, **defaults: Any) -> Any:
        assert description
        specs[name] = (factory, defaults)
        return factory

    register_all(register)
    assert set(specs) == {"normalized-sgd", "clipped-sgd"}
    assert specs["clipped-sgd"][1]["momentum"] == 0.0
    for name, (factory, defaults) in specs.items():
        finals = []
        for wd in (0.0, 0.5):
            params = make_params(11)
            run(factory(params, **{**defaults, "lr": 0.1, "weight_decay": wd}), params, 0, 5)
            finals.append(params)
        assert any((a - b).abs().max() > 1e-5 for a, b in zip(*finals)), name


def test_registry_entries_when_wired() -> None:
    import tamegrad.optim as optim

    if "normalized-sgd" not in optim.list_optimizers():
        pytest.skip("tamegrad.optim has not registered the baselines yet")
    assert isinstance(
        optim.create("normalized-sgd", make_params(0), lr=0.1, weight_decay=0.0), NormalizedSGD
    )
    opt = optim.create("clipped-sgd", make_params(0), lr=0.1, weight_decay=0.0)
    assert isinstance(opt, ClippedSGD) and opt.param_groups[0]["momentum"] == 0.0
