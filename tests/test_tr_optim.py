"""Behaviour of TRSGD, TRAdam, TRAdamW and the TrajectoryRegularized wrapper."""

from __future__ import annotations

import copy

import pytest
import torch

from tamegrad.optim import TRSGD, TRAdam, TRAdamW, TrajectoryRegularized, create

from _optim_utils import (
    make_params,
    max_abs_diff,
    noisy_loss,
    roundtrip,
    run_steps,
    trajectory,
)

CUDA = torch.cuda.is_available()

# Every TR flavour, by name, as a factory over a param list (foreach chosen by the caller).
TR_FACTORIES = {
    "trsgd": lambda ps, fe: TRSGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2, foreach=fe),
    "trsgd-nesterov": lambda ps, fe: TRSGD(
        ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2, foreach=fe
    ),
    "trsgd-dampening": lambda ps, fe: TRSGD(ps, lr=0.05, momentum=0.8, dampening=0.3, foreach=fe),
    "trsgd-plain": lambda ps, fe: TRSGD(ps, lr=0.05, foreach=fe),
    "trsgd-bf16": lambda ps, fe: TRSGD(
        ps, lr=0.05, momentum=0.9, anchor_dtype=torch.bfloat16, foreach=fe
    ),
    "tradam": lambda ps, fe: TRAdam(ps, lr=0.02, weight_decay=1e-2, foreach=fe),
    "tradam-amsgrad": lambda ps, fe: TRAdam(ps, lr=0.02, amsgrad=True, foreach=fe),
    "tradamw": lambda ps, fe: TRAdamW(ps, lr=0.02, foreach=fe),
    "tradam-bf16": lambda ps, fe: TRAdam(ps, lr=0.02, anchor_dtype=torch.bfloat16, foreach=fe),
    "tr(sgd)": lambda ps, fe: TrajectoryRegularized(
        torch.optim.SGD(ps, lr=0.05, momentum=0.9, foreach=fe), foreach=fe
    ),
    "tr(adam)": lambda ps, fe: TrajectoryRegularized(
        torch.optim.Adam(ps, lr=0.02, foreach=fe), foreach=fe
    ),
    "tr(rmsprop)": lambda ps, fe: TrajectoryRegularized(
        torch.optim.RMSprop(ps, lr=0.01, foreach=fe), foreach=fe
    ),
}


# --------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            lambda ps, fe: TRSGD(
                ps,
                lr=0.05,
                lambda_w=0,
                inner_decay=False,
                momentum=0.9,
                dampening=0.1,
                weight_decay=1e-2,
                foreach=fe,
            ),
            lambda ps, fe: torch.optim.SGD(
                ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2, foreach=fe
            ),
        ),
        (
            lambda ps, fe: TRSGD(
                ps,
                lr=0.05,
                lambda_w=0,
                inner_decay=False,
                momentum=0.9,
                nesterov=True,
                maximize=True,
                foreach=fe,
            ),
            lambda ps, fe: torch.optim.SGD(
                ps, lr=0.05, momentum=0.9, nesterov=True, maximize=True, foreach=fe
            ),
        ),
        (
            lambda ps, fe: TRAdam(
                ps, lr=0.02, lambda_w=0, inner_decay=False, weight_decay=1e-2, foreach=fe
            ),
            lambda ps, fe: torch.optim.Adam(ps, lr=0.02, weight_decay=1e-2, foreach=fe),
        ),
        (
            lambda ps, fe: TRAdamW(
                ps, lr=0.02, lambda_w=0, inner_decay=False, amsgrad=True, maximize=True, foreach=fe
            ),
            lambda ps, fe: torch.optim.AdamW(ps, lr=0.02, amsgrad=True, maximize=True, foreach=fe),
        ),
    ],
    ids=["sgd", "sgd-nesterov-max", "adam", "adamw-amsgrad-max"],
)
def test_zero_penalty_without_inner_decay_is_the_base_optimizer(ours, theirs, foreach):
    a = trajectory(lambda ps: ours(ps, foreach), steps=30)
    b = trajectory(lambda ps: theirs(ps, foreach), steps=30)
    if not foreach:
        # the per-tensor path follows torch's operation order: the same floats
        assert max_abs_diff(a, b) == 0.0
    else:
        # the foreach paths fold operations differently from torch's: equal up to rounding
        assert max_abs_diff(a, b) <= 1e-6


@pytest.mark.parametrize("foreach", [False, True])
def test_one_inner_step_is_the_base_optimizer(foreach):
    a = trajectory(
        lambda ps: TRSGD(
            ps,
            lr=0.05,
            lambda_w=0.5,
            inner_steps=1,
            momentum=0.9,
            weight_decay=1e-2,
            foreach=foreach,
        )
    )
    b = trajectory(
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2, foreach=foreach)
    )
    # TRSGD's foreach path accumulates the momentum buffer in another order than torch's
    assert max_abs_diff(a, b) <= (1e-6 if foreach else 0.0)
    a = trajectory(lambda ps: TRAdam(ps, lr=0.02, lambda_w=0.5, inner_steps=1, foreach=foreach))
    b = trajectory(lambda ps: torch.optim.Adam(ps, lr=0.02, foreach=foreach))
    assert max_abs_diff(a, b) <= (1e-6 if foreach else 0.0)


def _hand_trsgd(
    w0: float, noise: list[float], lr: float, lam_w: float, S: int, mu: float, wd: float
) -> list[float]:
    """The spec in plain Python floats: f(w) = 0.5 w^2 + n_t w, so g_t = w + n_t."""
    w, buf, anchor, out = w0, 0.0, w0, []
    for t, n in enumerate(noise):
        s = t % S
        if s == 0:
            anchor = w
        d = (w + n) + 2 * (lam_w / lr) * (w - anchor) + wd * w
        buf = d if t == 0 else mu * buf + d
        w = w - lr / (s + 1) * (buf if mu else d)
        out.append(w)
    return out


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_first_cycles_match_a_hand_computed_trajectory(foreach, momentum):
    noise = [0.3, -1.2, 0.7, 2.0, -0.4, 0.1, -0.9, 0.5, 1.1]  # two cycles of S = 4, and one more
    lr, lam_w, S, wd = 0.2, 0.05, 4, 0.01
    w = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    opt = TRSGD(
        [w],
        lr=lr,
        lambda_w=lam_w,
        inner_steps=S,
        momentum=momentum,
        weight_decay=wd,
        foreach=foreach,
    )
    ours = []
    for n in noise:
        opt.zero_grad()
        (0.5 * w**2 + n * w).sum().backward()
        opt.step()
        ours.append(float(w.detach()))
    hand = _hand_trsgd(1.5, noise, lr, lam_w, S, momentum, wd)
    assert ours == pytest.approx(hand, rel=1e-12, abs=1e-12)


def test_momentum_free_pull_towards_anchor_is_independent_of_lr():
    # zero gradient: w moves towards the anchor by 2 * lambda_w / (s + 1) of the gap per step
    for lr in (0.1, 1.0):
        w = torch.tensor([1.0], requires_grad=True)
        opt = TRSGD([w], lr=lr, lambda_w=0.05, inner_steps=3)
        w.grad = torch.zeros(1)
        opt.step()  # s = 0: anchor = 1.0, no pull
        with torch.no_grad():
            w.add_(1.0)  # gap 1.0 from the anchor
        opt.step()  # s = 1: pull by 2 * 0.05 / 2 = 0.05 of the gap
        assert float(w.detach()) == pytest.approx(2.0 - 0.05, rel=1e-6)


# --------------------------------------------------------------------------- paths
@pytest.mark.parametrize("name", sorted(TR_FACTORIES))
def test_foreach_and_per_tensor_paths_agree(name):
    make = TR_FACTORIES[name]
    a = trajectory(lambda ps: make(ps, True), steps=40)
    b = trajectory(lambda ps: make(ps, False), steps=40)
    assert max_abs_diff(a, b) <= 1e-6


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("name", ["trsgd", "trsgd-nesterov", "tradam", "tradamw", "trsgd-bf16"])
def test_paths_agree_on_cuda(name):
    make = TR_FACTORIES[name]
    a = trajectory(lambda ps: make(ps, True), steps=40, device="cuda")
    b = trajectory(lambda ps: make(ps, False), steps=40, device="cuda")
    c = trajectory(lambda ps: make(ps, False), steps=40, device="cpu")
    assert max_abs_diff(a, b) <= 1e-6
    assert max_abs_diff(a, c) <= 1e-5


@pytest.mark.parametrize("foreach", [False, True])
def test_wrapper_equals_standalone(foreach):
    pairs = [
        (
            lambda ps: TRSGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2, foreach=foreach),
            lambda ps: TrajectoryRegularized(
                torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2, foreach=foreach),
                foreach=foreach,
            ),
        ),
        (
            lambda ps: TRAdam(ps, lr=0.02, weight_decay=1e-2, foreach=foreach),
            lambda ps: TrajectoryRegularized(
                torch.optim.Adam(ps, lr=0.02, weight_decay=1e-2, foreach=foreach), foreach=foreach
            ),
        ),
        (
            lambda ps: TRAdamW(ps, lr=0.02, foreach=foreach),
            lambda ps: TrajectoryRegularized(
                torch.optim.AdamW(ps, lr=0.02, foreach=foreach), foreach=foreach
            ),
        ),
        (
            lambda ps: TRSGD(ps, lr=0.05, momentum=0.9, maximize=True, foreach=foreach),
            lambda ps: TrajectoryRegularized(
                torch.optim.SGD(ps, lr=0.05, momentum=0.9, maximize=True, foreach=foreach),
                foreach=foreach,
            ),
        ),
    ]
    for ours, wrapped in pairs:
        a, b = trajectory(ours), trajectory(wrapped)
        if foreach:  # relative: the maximize case grows the weights
            scale = max(1.0, max(x.abs().max().item() for x in b))
            assert max_abs_diff(a, b) <= 1e-6 * scale
        else:
            assert max_abs_diff(a, b) == 0.0


def test_registry_composites_equal_the_classes():
    a = trajectory(lambda ps: create("trsgd", ps, lr=0.05, momentum=0.9, foreach=False))
    b = trajectory(lambda ps: create("tr-sgd", ps, lr=0.05, momentum=0.9, foreach=False))
    assert max_abs_diff(a, b) == 0.0


# --------------------------------------------------------------------------- torch API
@pytest.mark.parametrize("name", sorted(TR_FACTORIES))
@pytest.mark.parametrize("foreach", [False, True])
def test_state_dict_resume_mid_cycle_is_bit_exact(name, foreach):
    make = TR_FACTORIES[name]
    full = trajectory(lambda ps: make(ps, foreach), steps=23)

    params = make_params(0)
    opt = make(params, foreach)
    run_steps(opt, params, 0, 13)  # 13 = mid-cycle for S = 10
    saved_params = [p.detach().clone() for p in params]
    saved_state = roundtrip(opt.state_dict())

    fresh = make_params(99)  # different init: everything must come from the checkpoint
    with torch.no_grad():
        for p, s in zip(fresh, saved_params):
            p.copy_(s)
    opt2 = make(fresh, foreach)
    opt2.load_state_dict(saved_state)
    run_steps(opt2, fresh, 13, 23)
    assert max_abs_diff(full, [p.detach() for p in fresh]) == 0.0


def test_state_dict_holds_cycle_position_and_hyperparameters():
    params = make_params()
    opt = TRSGD(params, lr=0.1, momentum=0.9, inner_steps=4)
    run_steps(opt, params, 0, 6)
    sd = opt.state_dict()
    group = sd["param_groups"][0]
    assert group["inner_step"] == 2
    assert group["lambda_w"] == pytest.approx(0.01)  # 0.1 * lr
    assert group["inner_steps"] == 4
    assert all("anchor" in st and "momentum_buffer" in st for st in sd["state"].values())


def test_anchor_dtype_is_kept_through_state_dict():
    params = make_params()
    opt = TRAdam(params, lr=0.01, anchor_dtype=torch.bfloat16)
    run_steps(opt, params, 0, 3)
    opt2 = TRAdam(make_params(), lr=0.01, anchor_dtype=torch.bfloat16)
    opt2.load_state_dict(roundtrip(opt.state_dict()))
    assert all(st["anchor"].dtype == torch.bfloat16 for st in opt2.state.values())
    anchor_bytes = sum(st["anchor"].nbytes for st in opt2.state.values())
    assert anchor_bytes * 2 == sum(p.nbytes for p in params)


def test_deepcopy_continues_identically():
    params = make_params()
    opt = TRSGD(params, lr=0.05, momentum=0.9)
    run_steps(opt, params, 0, 4)
    params2, opt2 = copy.deepcopy((params, opt))
    run_steps(opt, params, 4, 12)
    run_steps(opt2, params2, 4, 12)
    assert max_abs_diff(params, params2) == 0.0


@pytest.mark.parametrize("src_foreach", [True, False])
def test_trsgd_checkpoint_has_one_layout_and_moves_between_paths(src_foreach):
    # issue 11: a checkpoint from the foreach path (CUDA's default) held momentum_ema and
    # momentum_ema_scale, the per-tensor path's (CPU's default) momentum_buffer
    def make(ps, fe):
        return TRSGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2, inner_steps=4, foreach=fe)

    params = make_params()
    opt = make(params, src_foreach)
    run_steps(opt, params, 0, 6)
    sd = roundtrip(opt.state_dict())
    assert [sorted(st) for st in sd["state"].values()] == [["anchor", "momentum_buffer"]] * 3
    fresh = make_params(5)
    with torch.no_grad():
        for p, q in zip(fresh, params):
            p.copy_(q)
    opt2 = make(fresh, not src_foreach)
    opt2.load_state_dict(sd)
    for o in (opt, opt2):  # load_state_dict restores the saved group's foreach: switch both
        o.param_groups[0]["foreach"] = not src_foreach
    run_steps(opt, params, 6, 12)
    run_steps(opt2, fresh, 6, 12)
    assert max_abs_diff(params, fresh) == 0.0


def test_trsgd_reads_checkpoints_of_the_former_foreach_layout():
    params = make_params()
    opt = TRSGD(params, lr=0.05, momentum=0.9)
    run_steps(opt, params, 0, 3)
    sd = roundtrip(opt.state_dict())
    scale = 0.1  # the former foreach path stored momentum_ema = (1 - momentum) * b
    for st in sd["state"].values():
        st["momentum_ema"] = st.pop("momentum_buffer") * scale
        st["momentum_ema_scale"] = scale
    opt2 = TRSGD(make_params(), lr=0.05, momentum=0.9)
    opt2.load_state_dict(sd)
    for p, q in zip(params, opt2.param_groups[0]["params"]):
        assert sorted(opt2.state[q]) == ["anchor", "momentum_buffer"]
        torch.testing.assert_close(
            opt2.state[q]["momentum_buffer"], opt.state[p]["momentum_buffer"]
        )


@pytest.mark.parametrize("name", sorted(TR_FACTORIES))
def test_step_with_closure_returns_loss(name):
    params = make_params()
    opt = TR_FACTORIES[name](params, None)
    before = [p.detach().clone() for p in params]

    def closure():
        opt.zero_grad()
        loss = noisy_loss(params, 0)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and torch.isfinite(loss)
    assert max_abs_diff(before, params) > 0


@pytest.mark.parametrize("name", sorted(TR_FACTORIES))
def test_grad_is_never_modified(name):
    params = make_params()
    opt = TR_FACTORIES[name](params, None)
    for t in range(12):
        opt.zero_grad()
        noisy_loss(params, t).backward()
        grads = [p.grad for p in params]
        copies = [g.clone() for g in grads]
        opt.step()
        for p, g, c in zip(params, grads, copies):
            assert p.grad is g
            assert torch.equal(g, c)


@pytest.mark.parametrize("foreach", [False, True])
def test_params_without_grad_are_skipped_and_anchors_stay_right(foreach):
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = TRSGD([a, b], lr=0.1, lambda_w=0.05, inner_steps=4, foreach=foreach)
    for t in range(6):
        a.grad = torch.full((3,), 0.5)
        b.grad = None if t in (1, 2, 4) else torch.full((3,), -0.5)
        b_before = b.detach().clone()
        opt.step()
        if t in (1, 2, 4):
            assert torch.equal(b, b_before)
        if t == 4:  # s == 0 of the second cycle: b's anchor refreshed although b had no grad
            assert torch.equal(opt.state[b]["anchor"], b.detach())
    # a param that first gets a gradient mid-cycle is anchored at its value, never at zero
    c = torch.full((2,), 3.0, requires_grad=True)
    opt.add_param_group({"params": [c]})
    opt.step()  # group 2 starts its own cycle at s == 0
    c.grad = torch.zeros(2)
    opt.step()
    assert torch.equal(opt.state[c]["anchor"], torch.full((2,), 3.0))
    assert torch.equal(c.detach(), torch.full((2,), 3.0))


@pytest.mark.parametrize("name", sorted(TR_FACTORIES))
def test_lr_zero_group_does_not_move(name):
    frozen, moving = make_params(1), make_params(2)
    opt = TR_FACTORIES[name](moving, None)
    opt.add_param_group({"params": frozen, "lr": 0.0})
    before = [p.detach().clone() for p in frozen]
    run_steps(opt, frozen + moving, 0, 15)
    assert max_abs_diff(before, frozen) == 0.0
    assert all(torch.isfinite(p).all() for p in frozen + moving)


def test_param_groups_have_their_own_hyperparameters():
    a, b = make_params(1), make_params(2)
    opt = TRSGD([{"params": a}, {"params": b, "lr": 0.01, "inner_steps": 3}], lr=0.1, momentum=0.9)
    assert opt.param_groups[0]["lambda_w"] == pytest.approx(0.01)
    assert opt.param_groups[1]["lambda_w"] == pytest.approx(0.001)  # 0.1 * its own lr
    run_steps(opt, a + b, 0, 5)
    assert [g["inner_step"] for g in opt.param_groups] == [5, 2]


def test_lr_scheduler_drives_lr_and_penalty():
    params = make_params()
    opt = TRSGD(params, lr=0.1, lambda_w=0.01, momentum=0.9, inner_steps=5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)
    for t in range(4):
        run_steps(opt, params, t, t + 1)
        sched.step()
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.01)
    # the penalty coefficient is lambda_w / current lr: 10x larger after the decay
    from tamegrad.optim.trajectory import penalty_coef

    assert penalty_coef(group) == pytest.approx(2 * 0.01 / 0.01)


def test_gradient_accumulation_is_one_step():
    # accumulating two halves of a batch then stepping equals one step on the whole batch
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    m1 = torch.nn.Linear(4, 1)
    m2 = copy.deepcopy(m1)
    o1 = TRSGD(m1.parameters(), lr=0.1, momentum=0.9)
    o2 = TRSGD(m2.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        o1.zero_grad()
        torch.nn.functional.mse_loss(m1(x), y).backward()
        o1.step()
        o2.zero_grad()
        for half in (slice(0, 4), slice(4, 8)):
            (torch.nn.functional.mse_loss(m2(x[half]), y[half]) / 2).backward()
        o2.step()
    assert o1.param_groups[0]["inner_step"] == o2.param_groups[0]["inner_step"] == 5
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_gradscaler_skipped_step_does_not_advance_the_cycle():
    params = make_params()
    opt = TRSGD(params, lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    for t in range(3):
        opt.zero_grad()
        scaler.scale(noisy_loss(params, t)).backward()
        scaler.step(opt)
        scaler.update()
    assert opt.param_groups[0]["inner_step"] == 3
    before = [p.detach().clone() for p in params]
    opt.zero_grad()
    scaler.scale(noisy_loss(params, 3)).backward()
    params[0].grad[0, 0] = float("inf")
    scaler.step(opt)  # skipped: inf gradient
    scaler.update()
    assert opt.param_groups[0]["inner_step"] == 3
    assert max_abs_diff(before, params) == 0.0
    assert scaler.get_scale() < 2.0**8


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lambda_w": -1.0}, "lambda_w"),
        ({"lambda_w": float("nan")}, "lambda_w"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"inner_steps": 2.5}, "inner_steps"),
        ({"momentum": -0.5}, "momentum"),
        ({"weight_decay": float("inf")}, "weight_decay"),
        ({"dampening": 1.5}, "dampening"),
        ({"nesterov": True}, "nesterov"),
        ({"anchor_dtype": torch.int32}, "anchor_dtype"),
    ],
)
def test_invalid_trsgd_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        TRSGD(make_params(), **{"lr": 0.1, **kwargs})
    value = next(iter(kwargs.values()))
    if not isinstance(value, bool) and name != "nesterov":
        assert str(value) in str(info.value)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"betas": (1.0, 0.999)}, "betas"),
        ({"betas": (0.9, -0.1)}, "betas"),
        ({"betas": (0.9, float("nan"))}, "betas"),
        ({"eps": -1e-8}, "eps"),
        ({"lr": -1e-3}, "lr"),
        ({"inner_steps": 0}, "inner_steps"),
    ],
)
def test_invalid_tradam_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TRAdam(make_params(), **kwargs)


def test_invalid_group_hyperparameter_is_caught_too():
    opt = TRSGD(make_params(1), lr=0.1)
    with pytest.raises(ValueError, match="lambda_w"):
        opt.add_param_group({"params": make_params(2), "lambda_w": -0.1})


def test_wrapper_rejects_invalid_values_and_non_optimizers():
    with pytest.raises(ValueError, match="inner_steps"):
        TrajectoryRegularized(torch.optim.SGD(make_params(), lr=0.1), inner_steps=0)
    with pytest.raises(TypeError, match="Optimizer"):
        TrajectoryRegularized(make_params())  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [lambda ps: TRSGD(ps, lr=0.1), lambda ps: TRAdam(ps)])
def test_sparse_gradients_raise_a_clear_error(make):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = make(list(emb.parameters()))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


# --------------------------------------------------------------------------- convergence
def _quadratic_final_loss(make, steps: int = 600, seed: int = 0) -> float:
    """Strongly convex quadratic, eigenvalues 0.1..10, with heavy per-step gradient noise."""
    g = torch.Generator().manual_seed(seed)
    dim = 20
    eig = torch.logspace(-1, 1, dim)
    w = torch.ones(dim, requires_grad=True)
    opt = make([w])
    for _ in range(steps):
        opt.zero_grad()
        noise = torch.randn(dim, generator=g) * 3.0
        (0.5 * (eig * w**2).sum() + (noise * w).sum()).backward()
        opt.step()
    with torch.no_grad():
        return float(0.5 * (eig * w**2).sum())


@pytest.mark.parametrize("lr, momentum", [(0.05, 0.0), (0.01, 0.9)])
def test_trsgd_beats_sgd_on_a_noisy_quadratic_at_the_same_lr(lr, momentum):
    seeds = range(5)
    sgd = [
        _quadratic_final_loss(lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum), seed=s)
        for s in seeds
    ]
    trsgd = [
        _quadratic_final_loss(lambda ps: TRSGD(ps, lr=lr, momentum=momentum), seed=s) for s in seeds
    ]
    assert sum(trsgd) / len(trsgd) < 0.7 * sum(sgd) / len(sgd)


@pytest.mark.parametrize("name, lr", [("trsgd", 0.1), ("tradam", 3e-3), ("tradamw", 3e-3)])
def test_tiny_mlp_loss_halves(name, lr):
    torch.manual_seed(0)
    x = torch.randn(256, 10)
    y = (x[:, :3].sum(1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = create(name, model.parameters(), lr=lr, weight_decay=1e-4)
    with torch.no_grad():
        initial = float(torch.nn.functional.cross_entropy(model(x), y))
    losses = []
    for epoch in range(8):
        perm = torch.randperm(256, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, 256, 8):
            idx = perm[i : i + 8]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        with torch.no_grad():
            losses.append(float(torch.nn.functional.cross_entropy(model(x), y)))
    assert losses[-1] < 0.5 * initial


def test_momentum_schedule_and_path_switch_keep_torch_semantics():
    """The foreach path stores a rescaled buffer; changing momentum mid-run (OneCycle-style) or
    switching foreach on/off must still follow torch's heavy-ball recursion."""

    def run(foreach_by_step):
        params = make_params()
        opt = TRSGD(params, lr=0.05, momentum=0.9, dampening=0.1)
        for t in range(24):
            group = opt.param_groups[0]
            group["momentum"] = 0.8 + 0.15 * ((t % 5) / 4)
            group["foreach"] = foreach_by_step(t)
            run_steps(opt, params, t, t + 1)
        return [p.detach().clone() for p in params]

    reference = run(lambda t: False)
    for schedule in (lambda t: True, lambda t: t % 3 == 0):
        assert max_abs_diff(run(schedule), reference) <= 1e-6
