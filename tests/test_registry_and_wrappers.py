"""The optimizer registry, Lookahead, and wrapper plumbing (schedulers, state dicts)."""

from __future__ import annotations

import pytest
import torch

from tamegrad.optim import Lookahead, TrajectoryRegularized, create, list_optimizers

from _optim_utils import make_params, max_abs_diff, roundtrip, run_steps, trajectory


def test_list_contains_the_family_and_baselines():
    names = list_optimizers()
    for n in [
        "sgd",
        "adam",
        "adamw",
        "trsgd",
        "tradam",
        "tradamw",
        "lookahead",
        "tr-sgd",
        "tr-adam",
        "tr-rmsprop",
    ]:
        assert n in names


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'nope'.*trsgd"):
        create("nope", make_params(), lr=0.1)


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match="lambda_ww"):
        create("trsgd", make_params(), lr=0.1, lambda_ww=0.01)


@pytest.mark.parametrize("name", [n for n in list_optimizers()])
def test_every_registered_optimizer_builds_and_steps(name):
    params = make_params()
    opt = create(name, params, lr=1e-3, weight_decay=1e-4)
    before = [p.detach().clone() for p in params]
    run_steps(opt, params, 0, 3)
    assert max_abs_diff(before, params) > 0
    opt2 = create(name, make_params(), lr=1e-3, weight_decay=1e-4)
    opt2.load_state_dict(roundtrip(opt.state_dict()))


def test_lookahead_interpolates_every_k_steps():
    k, alpha = 3, 0.5
    params = make_params()
    init = [p.detach().clone() for p in params]
    la = Lookahead(torch.optim.SGD(params, lr=0.05), k=k, alpha=alpha)
    # the same fast trajectory without lookahead, for the first k steps
    ref_params = make_params()
    run_steps(torch.optim.SGD(ref_params, lr=0.05), ref_params, 0, k)
    run_steps(la, params, 0, k)
    expected = [s + alpha * (f.detach() - s) for s, f in zip(init, ref_params)]
    assert max_abs_diff(expected, params) <= 1e-6
    assert max_abs_diff(expected, [la.state[p]["slow"] for p in params]) <= 1e-6


def test_lookahead_resume_is_bit_exact():
    make = lambda ps: Lookahead(torch.optim.SGD(ps, lr=0.05, momentum=0.9), k=4)
    full = trajectory(make, steps=14)
    params = make_params()
    opt = make(params)
    run_steps(opt, params, 0, 6)
    sd, saved = roundtrip(opt.state_dict()), [p.detach().clone() for p in params]
    fresh = make_params(5)
    with torch.no_grad():
        for p, s in zip(fresh, saved):
            p.copy_(s)
    opt2 = make(fresh)
    opt2.load_state_dict(sd)
    run_steps(opt2, fresh, 6, 14)
    assert max_abs_diff(full, fresh) == 0.0


def test_wrapper_shares_param_groups_with_scheduler_and_new_groups():
    params = make_params()
    base = torch.optim.SGD(params[:2], lr=0.1, momentum=0.9)
    opt = TrajectoryRegularized(base)  # lambda_w = 0.1 x each group's own lr
    assert opt.param_groups is base.param_groups
    assert opt.param_groups[0]["lambda_w"] == pytest.approx(0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    run_steps(opt, params[:2], 0, 4)
    for _ in range(4):
        sched.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.025)
    opt.add_param_group({"params": [params[2]], "lr": 0.2})
    assert len(base.param_groups) == 2
    assert opt.param_groups[1]["lambda_w"] == pytest.approx(0.02)
    sd = roundtrip(opt.state_dict())
    opt.load_state_dict(sd)
    assert opt.param_groups is base.param_groups


def test_wrapper_restores_lr_and_grad_even_if_the_wrapped_step_fails():
    params = make_params()

    class Exploding(torch.optim.SGD):
        def step(self, closure=None):  # type: ignore[override]
            raise RuntimeError("boom")

    opt = TrajectoryRegularized(Exploding(params, lr=0.1), lambda_w=0.01)
    run_steps_ok = False
    for _ in range(2):
        opt.zero_grad()
        loss = sum((p**2).sum() for p in params)
        loss.backward()
        grads = [p.grad for p in params]
        with pytest.raises(RuntimeError, match="boom"):
            opt.step()
        assert all(p.grad is g for p, g in zip(params, grads))
        assert opt.param_groups[0]["lr"] == 0.1
        run_steps_ok = True
    assert run_steps_ok
