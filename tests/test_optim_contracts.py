"""Contracts every registered optimizer keeps: copies, rejected param groups, compiled steps.

Each test runs over ``tamegrad.optim.list_optimizers()``, so an optimizer registered later is
held to the same contracts without editing this file.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch
from torch.optim import Optimizer

from tamegrad.optim import WrappedOptimizer, create, list_optimizers

from _optim_utils import make_params, max_abs_diff, run_steps

NAMES = list_optimizers()
HP: dict[str, Any] = {"lr": 0.01, "weight_decay": 1e-4}


def _copy(obj: Any, how: str) -> Any:
    if how == "deepcopy":
        return copy.deepcopy(obj)
    return pickle.loads(pickle.dumps(obj))


def _groups_hold(opt: Optimizer, params: list[torch.Tensor]) -> bool:
    held = [p for g in opt.param_groups for p in g["params"]]
    return len(held) == len(params) and all(a is b for a, b in zip(held, params))


# ----------------------------------------------------------------------------- copies
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", NAMES)
def test_copy_round_trips_and_continues_identically(name: str, how: str) -> None:
    params = make_params()
    opt = create(name, params, **HP)
    run_steps(opt, params, 0, 3)
    params2, opt2 = _copy((params, opt), how)
    assert type(opt2) is type(opt)
    assert _groups_hold(opt2, params2) and not _groups_hold(opt2, params)
    if isinstance(opt, WrappedOptimizer):
        assert isinstance(opt2, WrappedOptimizer)
        assert opt2.param_groups is opt2.optimizer.param_groups
        assert opt2.optimizer is not opt.optimizer
    run_steps(opt, params, 3, 8)
    run_steps(opt2, params2, 3, 8)
    assert max_abs_diff(params, params2) == 0.0
