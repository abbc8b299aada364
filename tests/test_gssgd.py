"""Oracle and API tests for GeneralizedSignSGD (tamegrad.optim.gssgd)."""

from __future__ import annotations

import copy
import io
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tamegrad.optim.gssgd import GeneralizedSignSGD, max_coordinate_step, register_all

SHAPES = [(5, 3), (7,), (2, 2, 3)]


def make_params(
    seed: int = 0, dtypes: tuple[torch.dtype, ...] = (torch.float32,)
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(s, generator=g, dtype=torch.float64).to(dtypes[i % len(dtypes)])
        for i, s in enumerate(SHAPES)
    ]


def noisy_grads(params: list[torch.Tensor], t: int) -> list[torch.Tensor]:
    """Gradient of 0.5*||w||^2 + <noise_t, w>: depends on w, noisy like a batch-size-1 gradient."""
    g = torch.Generator().manual_seed(1000 + t)
    return [
        p.detach() + torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        for p in params
    ]


def run(opt: torch.optim.Optimizer, params: list[torch.Tensor], start: int, stop: int) -> None:
    for t in range(start, stop):
        for p, g in zip(params, noisy_grads(params, t)):
            p.grad = g
        opt.step()


def clones(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def assert_all_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b):
        assert torch.equal(x, y), (x - y).abs().max().item()


# --------------------------------------------------------------------------- oracles


def test_beta2_zero_is_signum() -> None:
    lr, b1, eps = 0.01, 0.9, 1e-8
    w = torch.zeros(50, dtype=torch.float64)
    opt = GeneralizedSignSGD([w], lr=lr, betas=(b1, 0.0), eps=eps)
    gen = torch.Generator().manual_seed(0)
    m = torch.zeros_like(w)
    for _ in range(20):
        g = torch.randn(50, generator=gen, dtype=torch.float64)
        w.grad = g
        before = w.clone()
        opt.step()
        m = b1 * m + (1 - b1) * g
        step = before - w
        torch.testing.assert_close(step, lr * m / (m.abs() + eps), rtol=1e-9, atol=1e-15)
        big = m.abs() > 0.05  # |m| >> eps: the step is lr * sign(m)
        assert big.sum() > 25
        torch.testing.assert_close(step[big], lr * m[big].sign(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_beta1_beta2_zero_is_plain_signsgd(foreach: bool) -> None:
    lr = 0.05
    w = torch.randn(200)
    opt = GeneralizedSignSGD([w], lr=lr, betas=(0.0, 0.0), foreach=foreach)
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        # |g| in [0.01, 1e4), so eps/|g| <= 1e-6: the step is lr*sign(g) to float precision
        magnitude = (0.01 + torch.rand(200, generator=gen)) * 10.0 ** torch.randint(
            0, 4, (200,), generator=gen
        )
        g = torch.randn(200, generator=gen).sign() * magnitude
        g[:5] = 0.0  # zero gradient: no move (not NaN)
        w.grad = g
        before = w.clone()
        opt.step()
        torch.testing.assert_close(w, before - lr * g.sign(), rtol=0, atol=1e-6)
        assert torch.equal(opt.state[w]["exp_avg"], g)  # momentum is exactly the gradient


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    beta1=st.floats(0.0, 0.99),
    beta2=st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999]),
    spike_every=st.integers(2, 7),
    spike=st.sampled_from([1e3, 1e6]),
    weight_decay=st.sampled_from([0.0, 0.1]),
    foreach=st.booleans(),
)
def test_step_bounded_by_lr_over_sqrt_one_minus_beta2(
    seed: int,
    beta1: float,
    beta2: float,
    spike_every: int,
    spike: float,
    weight_decay: float,
    foreach: bool,
) -> None:
    lr = 0.1
    bound = max_coordinate_step(lr, beta2)
    gen = torch.Generator().manual_seed(seed)
    w64 = torch.randn(64, generator=gen, dtype=torch.float64)
    w32 = torch.randn(3, 17, generator=gen)
    params = [w64, w32]
    opt = GeneralizedSignSGD(
        params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, foreach=foreach
    )
    for t in range(30):
        for p in params:
            g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if t % spike_every == 0:
                # occasional huge spike, on a random subset of coordinates, either sign
                mask = torch.rand(p.shape, generator=gen) < 0.3
                g = torch.where(mask, g * spike, g)
            p.grad = g
        before = [p.clone() for p in params]
        opt.step()
        # float64: the measured step itself
        assert (w64 - before[0]).abs().max().item() <= bound * (1 + 1e-9)
        # float32: the normalised quantity the step is made of (measuring w - w_old in float32
        # would add rounding of w to the check)
        s = opt.state[w32]
        ratio = s["exp_avg"].abs() / (s["exp_avg_sq"].sqrt() + opt.param_groups[0]["eps"])
        assert ratio.max().item() * lr <= bound * (1 + 1e-5)
        assert all(torch.isfinite(p).all() for p in params)


def test_bias_corrected_first_step_is_lr_over_one_minus_beta1() -> None:
    # Documented consequence of correcting an EMA of m^2 (m itself biased).
    lr, b1, b2 = 1e-3, 0.9, 0.999
    w = torch.zeros(10, dtype=torch.float64)
    opt = GeneralizedSignSGD([w], lr=lr, betas=(b1, b2), bias_correction=True)
    w.grad = torch.linspace(-3, 3, 10, dtype=torch.float64) + 0.05
    opt.step()
    torch.testing.assert_close(w.abs(), torch.full_like(w, lr / (1 - b1)), rtol=1e-6, atol=0)


def reference_update(
    w0: torch.Tensor,
    grad_fn: Callable[[torch.Tensor, int], torch.Tensor],
    steps: int,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    bias_correction: bool,
    second_moment_source: str,
) -> torch.Tensor:
    """Textbook update, written independently of the optimizer: the only switch between Adam
    and Generalized SignSGD is what the second moment averages (g^2 or m^2)."""
    b1, b2 = betas
    w = w0.clone()
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for t in range(1, steps + 1):
        g = grad_fn(w, t)
        m = b1 * m + (1 - b1) * g
        s = {"g": g, "m": m}[second_moment_source]
        v = b2 * v + (1 - b2) * s * s
        m_hat = m / (1 - b1**t) if bias_correction else m
        v_hat = v / (1 - b2**t) if bias_correction else v
        w = w - lr * m_hat / (v_hat.sqrt() + eps)
    return w


def _quad_grad(w: torch.Tensor, t: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(77 + t)
    return 0.7 * (w - 1.0) + torch.randn(w.shape, generator=g, dtype=w.dtype)


def _run_optimizer(opt_cls: Any, w0: torch.Tensor, steps: int, **kw: Any) -> torch.Tensor:
    w = w0.clone()
    opt = opt_cls([w], **kw)
    for t in range(1, steps + 1):
        w.grad = _quad_grad(w.detach(), t)
        opt.step()
    return w


@pytest.mark.parametrize("second_moment_source", ["g", "m"])
@pytest.mark.parametrize("foreach", [False, True])
def test_reference_matches_adam_with_g_and_gssgd_with_m(
    second_moment_source: str, foreach: bool
) -> None:
    w0 = torch.randn(40, generator=torch.Generator().manual_seed(3))
    hp: dict[str, Any] = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8}
    ref = reference_update(
        w0, _quad_grad, 20, bias_correction=True, second_moment_source=second_moment_source, **hp
    )
    if second_moment_source == "g":
        got = _run_optimizer(torch.optim.Adam, w0, 20, foreach=foreach, **hp)
    else:
        got = _run_optimizer(
            GeneralizedSignSGD, w0, 20, bias_correction=True, foreach=foreach, **hp
        )
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert (got - w0).abs().max() > 0.05  # it really moved


def test_reference_with_m_without_bias_correction_is_the_default() -> None:
    w0 = torch.randn(40, generator=torch.Generator().manual_seed(4))
    hp: dict[str, Any] = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}
    ref = reference_update(
        w0, _quad_grad, 20, bias_correction=False, second_moment_source="m", **hp
    )
    got = _run_optimizer(GeneralizedSignSGD, w0, 20, **hp)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    # and it is NOT Adam
    adam = _run_optimizer(torch.optim.Adam, w0, 20, **hp)
    assert (adam - got).abs().max() > 1e-3


@pytest.mark.parametrize("foreach", [False, True])
def test_hand_computed_three_steps(foreach: bool) -> None:
    # lr 0.1, betas (0.5, 0.75), no bias correction. Gradients fixed (independent of w).
    # coordinate 0: g = 2, 6, -2
    #   m1 = 1,    v1 = 0.25 * 1              = 0.25     step 1/0.5        = 2
    #   m2 = 3.5,  v2 = 0.1875 + 0.25 * 12.25 = 3.25     step 3.5/sqrt(3.25)
    #   m3 = 0.75, v3 = 2.4375 + 0.25 * 0.5625 = 2.578125 step 0.75/sqrt(2.578125)
    # coordinate 1: g = -4, 0, 4   (step 2 has a zero gradient: momentum keeps it moving)
    #   m1 = -2,   v1 = 0.25 * 4              = 1        step -2
    #   m2 = -1,   v2 = 0.75 + 0.25 * 1       = 1        step -1
    #   m3 = 1.5,  v3 = 0.75 + 0.25 * 2.25    = 1.3125   step 1.5/sqrt(1.3125)
    w = torch.tensor([1.0, -1.0], dtype=torch.float64)
    opt = GeneralizedSignSGD([w], lr=0.1, betas=(0.5, 0.75), eps=1e-8, foreach=foreach)
    grads = [[2.0, -4.0], [6.0, 0.0], [-2.0, 4.0]]
    expected = [
        [1.0 - 0.1 * 2, -1.0 + 0.1 * 2],
        [0.8 - 0.1 * 3.5 / math.sqrt(3.25), -0.8 + 0.1 * 1],
        [
            0.8 - 0.1 * 3.5 / math.sqrt(3.25) - 0.1 * 0.75 / math.sqrt(2.578125),
            -0.7 - 0.1 * 1.5 / math.sqrt(1.3125),
        ],
    ]
    for g, exp in zip(grads, expected):
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        torch.testing.assert_close(w, torch.tensor(exp, dtype=torch.float64), rtol=0, atol=1e-7)
    state = opt.state[w]
    assert state["step"].item() == 3
    torch.testing.assert_close(state["exp_avg"], torch.tensor([0.75, 1.5], dtype=torch.float64))
    torch.testing.assert_close(
        state["exp_avg_sq"], torch.tensor([2.578125, 1.3125], dtype=torch.float64)
    )


# --------------------------------------------------------------------------- weight decay


@pytest.mark.parametrize("foreach", [False, True])
def test_decoupled_weight_decay_is_a_pure_shrink_with_zero_grads(foreach: bool) -> None:
    lr, wd = 0.1, 0.5
    w0 = torch.randn(30, dtype=torch.float64)
    w = w0.clone()
    opt = GeneralizedSignSGD(
        [w], lr=lr, weight_decay=wd, decoupled_weight_decay=True, foreach=foreach
    )
    for _ in range(5):
        w.grad = torch.zeros_like(w)
        opt.step()
    torch.testing.assert_close(w, w0 * (1 - lr * wd) ** 5, rtol=1e-12, atol=0)
    assert torch.equal(opt.state[w]["exp_avg"], torch.zeros_like(w))


@pytest.mark.parametrize("foreach", [False, True])
def test_coupled_weight_decay_goes_through_the_normalisation(foreach: bool) -> None:
    lr, wd, b2 = 0.01, 0.5, 0.999
    gen = torch.Generator().manual_seed(11)
    w0 = torch.randn(30, generator=gen, dtype=torch.float64).sign() * (
        1 + torch.rand(30, generator=gen, dtype=torch.float64)
    )  # |w| in [1, 2]: far from 0 so eps is negligible
    w = w0.clone()
    opt = GeneralizedSignSGD(
        [w], lr=lr, betas=(0.9, b2), eps=1e-12, weight_decay=wd, foreach=foreach
    )
    w.grad = torch.zeros_like(w)
    opt.step()
    # g = wd*w, m = 0.1 g, v = 0.001 m^2: the first step is lr/sqrt(1-beta2) * sign(w)
    torch.testing.assert_close(w, w0 - lr / math.sqrt(1 - b2) * w0.sign(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_weight_decay_modes_equal_their_definitions(foreach: bool) -> None:
    lr, wd = 0.01, 0.3
    params_c, params_d, params_ref_c, params_ref_d = (make_params(5) for _ in range(4))
    coupled = GeneralizedSignSGD(params_c, lr=lr, weight_decay=wd, foreach=foreach)
    decoupled = GeneralizedSignSGD(
        params_d, lr=lr, weight_decay=wd, decoupled_weight_decay=True, foreach=foreach
    )
    ref_c = GeneralizedSignSGD(params_ref_c, lr=lr, foreach=foreach)
    ref_d = GeneralizedSignSGD(params_ref_d, lr=lr, foreach=foreach)
    for t in range(15):
        for p, g in zip(params_c, noisy_grads(params_c, t)):
            p.grad = g
        coupled.step()
        for p, g in zip(params_ref_c, noisy_grads(params_ref_c, t)):
            p.grad = g.add(p, alpha=wd)  # L2 added to the gradient by hand
        ref_c.step()
        for p, g in zip(params_d, noisy_grads(params_d, t)):
            p.grad = g
        decoupled.step()
        grads = noisy_grads(params_ref_d, t)  # gradient at the un-shrunk weights
        for p, g in zip(params_ref_d, grads):
            p.mul_(1 - lr * wd)  # AdamW-style shrink by hand, outside the normalisation
            p.grad = g
        ref_d.step()
    assert_all_equal(params_c, params_ref_c)
    assert_all_equal(params_d, params_ref_d)
    # the two modes really differ, and both differ from no weight decay
    plain = make_params(5)
    run(GeneralizedSignSGD(plain, lr=lr, foreach=foreach), plain, 0, 15)
    for a, b, c in zip(params_c, params_d, plain):
        assert (a - b).abs().max() > 1e-4
        assert (a - c).abs().max() > 1e-4
        assert (b - c).abs().max() > 1e-4


def test_momentum_persists_across_steps() -> None:
    b1 = 0.9
    w = torch.zeros(4, dtype=torch.float64)
    opt = GeneralizedSignSGD([w], lr=0.1, betas=(b1, 0.0))
    w.grad = torch.tensor([1.0, -2.0, 3.0, -4.0], dtype=torch.float64)
    opt.step()
    m1 = opt.state[w]["exp_avg"].clone()
    positions = [w.clone()]
    for k in range(1, 6):
        w.grad = torch.zeros_like(w)
        opt.step()
        torch.testing.assert_close(opt.state[w]["exp_avg"], m1 * b1**k, rtol=1e-12, atol=0)
        positions.append(w.clone())
    # with zero gradients the decaying momentum still moves w by ~lr*sign(m) every step
    for a, b in itertools.pairwise(positions):
        torch.testing.assert_close(b - a, -0.1 * m1.sign(), rtol=1e-6, atol=0)


# --------------------------------------------------------------------------- foreach vs loop

FOREACH_CONFIGS: list[dict[str, Any]] = [
    {},
    {"betas": (0.9, 0.0)},
    {"betas": (0.0, 0.0)},
    {"betas": (0.95, 0.0), "weight_decay": 0.1},
    {"bias_correction": True, "weight_decay": 0.05, "decoupled_weight_decay": True},
    {"bias_correction": True, "maximize": True, "weight_decay": 0.1},
    {"betas": (0.5, 0.9), "maximize": True, "weight_decay": 0.1, "decoupled_weight_decay": True},
]


@pytest.mark.parametrize("cfg", FOREACH_CONFIGS, ids=lambda c: ",".join(map(str, c)) or "default")
def test_foreach_and_loop_agree_bitwise_over_many_steps(cfg: dict[str, Any]) -> None:
    dtypes = (torch.float32, torch.float64, torch.float32)
    pa, pb = make_params(1, dtypes), make_params(1, dtypes)
    oa = GeneralizedSignSGD(pa, lr=0.01, foreach=False, **cfg)
    ob = GeneralizedSignSGD(pb, lr=0.01, foreach=True, **cfg)
    for t in range(100):
        grads = noisy_grads(pa, t)
        if t % 10 == 3:  # a near-zero momentum coordinate: where sign steps amplify rounding
            grads[0][0, 0] = 1e-30
        for p, g in zip(pa, grads):
            p.grad = g.clone()
        for p, g in zip(pb, grads):
            p.grad = g.clone()
        oa.step()
        ob.step()
        assert_all_equal(pa, pb)
    for p, q in zip(pa, pb):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(oa.state[p][key], ob.state[q][key])


def test_complex_params_are_pairs_of_real_coordinates() -> None:
    gen = torch.Generator().manual_seed(9)
    z = torch.randn(6, generator=gen, dtype=torch.complex64)
    r = torch.view_as_real(z).clone()
    outs = []
    for foreach in (False, True):
        zc = z.clone()
        oz = GeneralizedSignSGD([zc], lr=0.01, weight_decay=0.1, foreach=foreach)
        rc = r.clone()
        orr = GeneralizedSignSGD([rc], lr=0.01, weight_decay=0.1, foreach=foreach)
        for t in range(5):
            g = torch.randn(6, generator=torch.Generator().manual_seed(t), dtype=torch.complex64)
            zc.grad = g
            rc.grad = torch.view_as_real(g).clone()
            oz.step()
            orr.step()
        assert torch.equal(torch.view_as_real(zc), rc)
        outs.append(zc)
    assert torch.equal(outs[0], outs[1])


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize("foreach", [False, True, None])
def test_grad_untouched_none_skipped_and_closure(foreach: bool | None) -> None:
    a = torch.randn(5, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    b0 = b.detach().clone()
    opt = GeneralizedSignSGD([a, b], lr=0.1, weight_decay=0.1, maximize=True, foreach=foreach)
    calls = []

    def closure() -> float:
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = (a**2).sum()
        loss.backward()
        return float(loss.detach())

    expected_loss = float((a.detach() ** 2).sum())
    loss = opt.step(closure)
    assert calls == [True]
    assert loss == expected_loss  # the closure's value is returned
    assert b.grad is None and torch.equal(b.detach(), b0) and len(opt.state[b]) == 0
    g_before = a.grad.clone()
    opt.step()
    assert torch.equal(a.grad, g_before)  # neither maximize nor weight decay wrote into grad
    assert not a.grad.requires_grad


def test_sparse_gradients_raise() -> None:
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = GeneralizedSignSGD(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_param_groups_use_their_own_hyperparameters() -> None:
    pa, pb = make_params(2), make_params(2)
    grouped = GeneralizedSignSGD(
        [
            {"params": pa[:2], "lr": 0.05, "betas": (0.5, 0.0)},
            {"params": pa[2:], "weight_decay": 0.1, "bias_correction": True},
        ],
        lr=0.01,
    )
    sep1 = GeneralizedSignSGD(pb[:2], lr=0.05, betas=(0.5, 0.0))
    sep2 = GeneralizedSignSGD(pb[2:], lr=0.01, weight_decay=0.1, bias_correction=True)
    for t in range(10):
        for p, g in zip(pa, noisy_grads(pa, t)):
            p.grad = g
        for p, g in zip(pb, noisy_grads(pb, t)):
            p.grad = g
        grouped.step()
        sep1.step()
        sep2.step()
    assert_all_equal(pa, pb)
    assert grouped.param_groups[0]["betas"] == (0.5, 0.0)
    assert grouped.param_groups[1]["betas"] == (0.9, 0.999)


@pytest.mark.parametrize("foreach", [False, True])
def test_lr_zero_group_does_not_move(foreach: bool) -> None:
    params = make_params(3)
    frozen = clones(params[:1])
    opt = GeneralizedSignSGD(
        [{"params": params[:1], "lr": 0.0}, {"params": params[1:]}],
        lr=0.1,
        weight_decay=0.1,
        decoupled_weight_decay=True,
        foreach=foreach,
    )
    moving = clones(params[1:])
    run(opt, params, 0, 5)
    assert torch.equal(params[0], frozen[0])
    assert all((p - q).abs().max() > 0 for p, q in zip(params[1:], moving))


@pytest.mark.parametrize("foreach", [False, True])
def test_tensor_lr_matches_float_lr(foreach: bool) -> None:
    pa, pb = make_params(4), make_params(4)
    run(GeneralizedSignSGD(pa, lr=torch.tensor(0.02), foreach=foreach), pa, 0, 5)
    run(GeneralizedSignSGD(pb, lr=0.02, foreach=foreach), pb, 0, 5)
    assert_all_equal(pa, pb)


@pytest.mark.parametrize("foreach", [False, True])
def test_state_dict_round_trip_continues_bit_for_bit(foreach: bool) -> None:
    hp: dict[str, Any] = {"lr": 0.01, "weight_decay": 0.05, "bias_correction": True}
    ref = make_params(6)
    ref_opt = GeneralizedSignSGD(ref, foreach=foreach, **hp)
    run(ref_opt, ref, 0, 20)

    first = make_params(6)
    opt = GeneralizedSignSGD(first, foreach=foreach, **hp)
    run(opt, first, 0, 8)
    buf = io.BytesIO()
    torch.save({"params": clones(first), "optim": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    resumed = [p.clone() for p in ckpt["params"]]
    opt2 = GeneralizedSignSGD(resumed, foreach=foreach, **hp)
    opt2.load_state_dict(ckpt["optim"])
    assert opt2.state[resumed[0]]["step"].item() == 8
    run(opt2, resumed, 8, 20)
    assert_all_equal(resumed, ref)

    # deepcopy: an independent copy that continues identically
    params_c = make_params(6)
    opt_c = GeneralizedSignSGD(params_c, foreach=foreach, **hp)
    run(opt_c, params_c, 0, 8)
    dup = copy.deepcopy(opt_c)
    dup_params = dup.param_groups[0]["params"]
    assert all(p is not q for p, q in zip(dup_params, params_c))
    run(dup, dup_params, 8, 20)
    assert_all_equal(dup_params, ref)
    assert opt_c.state[params_c[0]]["step"].item() == 8  # original untouched


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"lr": -1.0}, "lr", "-1.0"),
        ({"lr": float("nan")}, "lr", "nan"),
        ({"betas": (1.0, 0.9)}, "betas[0]", "1.0"),
        ({"betas": (-0.1, 0.9)}, "betas[0]", "-0.1"),
        ({"betas": (0.9, 1.5)}, "betas[1]", "1.5"),
        ({"betas": (0.9, float("nan"))}, "betas[1]", "nan"),
        ({"betas": (0.9,)}, "betas", "(0.9,)"),
        ({"eps": float("nan")}, "eps", "nan"),
        ({"eps": 0.0}, "eps", "0.0"),
        ({"eps": -1e-8}, "eps", "-1e-08"),
        ({"weight_decay": -0.1}, "weight_decay", "-0.1"),
        ({"weight_decay": float("inf")}, "weight_decay", "inf"),
        ({"maximize": "yes"}, "maximize", "yes"),
        ({"foreach": 1}, "foreach", "1"),
    ],
)
def test_invalid_hyperparameters_raise_value_error_naming_them(
    kwargs: dict[str, Any], name: str, value: str
) -> None:
    with pytest.raises(ValueError) as err:
        GeneralizedSignSGD([torch.zeros(2)], **kwargs)
    assert name in str(err.value) and value in str(err.value)


def test_invalid_param_group_hyperparameters_raise() -> None:
    opt = GeneralizedSignSGD([torch.zeros(2)])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.zeros(3)], "lr": -0.5})
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        GeneralizedSignSGD([{"params": [torch.zeros(2)], "betas": (0.9, 1.0)}])


# --------------------------------------------------------------------------- registration


def test_register_all_factories_accept_lr_and_weight_decay() -> None:
    specs: dict[str, tuple[Any, str, dict[str, Any]]] = {}

    def register(name: str, factory: Any, description: str, **defaults: Any) -> Any:
        specs[name] = (factory, description, defaults)
        return factory

    register_all(register)
    assert set(specs) == {"gssgd", "signum", "signsgd"}
    assert specs["signum"][2] == {"betas": (0.9, 0.0)}
    assert specs["signsgd"][2] == {"betas": (0.0, 0.0)}
    for name, (factory, description, defaults) in specs.items():
        assert description
        finals = []
        for wd in (0.0, 0.5):
            params = make_params(8)
            opt = factory(params, **{**defaults, "lr": 0.01, "weight_decay": wd})
            run(opt, params, 0, 5)
            finals.append(params)
        # weight decay passed by keyword is really applied
        assert any((a - b).abs().max() > 1e-5 for a, b in zip(*finals)), name


def test_registry_entries_when_wired() -> None:
    import tamegrad.optim as optim

    if "gssgd" not in optim.list_optimizers():
        pytest.skip("tamegrad.optim has not registered gssgd yet")
    for name in ("gssgd", "signum", "signsgd"):
        opt = optim.create(name, make_params(0), lr=0.01, weight_decay=0.1)
        assert isinstance(opt, GeneralizedSignSGD)
    assert optim.create("signum", make_params(0), lr=0.01).param_groups[0]["betas"] == (0.9, 0.0)
