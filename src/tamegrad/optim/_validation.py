"""Hyper-parameter checks shared by every tamegrad optimizer.

Each check raises ``ValueError`` naming the parameter and the offending value, and rejects NaN
(``nan < 0`` is False, so a bare comparison would let NaN through).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


def _as_float(name: str, value: object) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Invalid {name}: a tensor {name} must have one element, got {value}")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name}: expected a number, got {value!r}")
    return float(value)


def check_nonnegative(name: str, value: object) -> float:
    """``value >= 0`` and finite."""
    v = _as_float(name, value)
    if not math.isfinite(v) or v < 0.0:
        raise ValueError(f"Invalid {name}: {value} (must be a finite number >= 0)")
    return v


def check_positive(name: str, value: object) -> float:
    """``value > 0`` and finite."""
    v = _as_float(name, value)
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"Invalid {name}: {value} (must be a finite number > 0)")
    return v


def check_unit_interval(name: str, value: object, *, closed_right: bool = False) -> float:
    """``0 <= value < 1`` (or ``<= 1`` with ``closed_right``)."""
    v = _as_float(name, value)
    ok = 0.0 <= v <= 1.0 if closed_right else 0.0 <= v < 1.0
    if not math.isfinite(v) or not ok:
        bound = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"Invalid {name}: {value} (must be in {bound})")
    return v


def check_betas(value: object, name: str = "betas") -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"Invalid {name}: {value!r} (expected a pair (beta1, beta2))")
    b1 = check_unit_interval(f"{name}[0]", value[0])
    b2 = check_unit_interval(f"{name}[1]", value[1])
    return b1, b2


def check_flag(name: str, value: object, *, allow_none: bool = False) -> None:
    """``value`` must be a bool (or None when ``allow_none``): ``1`` or ``"yes"`` is refused."""
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        expected = "True, False or None" if allow_none else "True or False"
        raise ValueError(f"Invalid {name}: {value!r} (expected {expected})")


def check_int(
    name: str, value: object, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` is a Python int (not a bool, not a float such as ``2.0``) within the bounds.

    The one integer check of the project (optimizers, data, engine): use it rather than a
    local copy.
    """
    if minimum is not None and maximum is not None:
        bound = f" in [{minimum}, {maximum}]"
    elif minimum is not None:
        bound = f" >= {minimum}"
    elif maximum is not None:
        bound = f" <= {maximum}"
    else:
        bound = ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"Invalid {name}: {value!r} (expected an integer{bound})")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"Invalid {name}: {value} (must be an integer{bound})")
    return value


def check_int_at_least(name: str, value: object, minimum: int) -> int:
    """:func:`check_int` with a lower bound only."""
    return check_int(name, value, minimum=minimum)


def check_no_sparse(optimizer_name: str, grads: Iterable[Tensor]) -> None:
    for g in grads:
        if g.is_sparse:
            raise RuntimeError(
                f"{optimizer_name} does not support sparse gradients; "
                "use dense embeddings (sparse=False) or torch.optim.SparseAdam"
            )


def check_float_dtype(name: str, dtype: object) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"Invalid {name}: {dtype!r} is not a torch dtype")
        dtype = resolved
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"Invalid {name}: {dtype!r} (expected a floating-point torch.dtype)")
    return dtype


def validated_group(
    defaults: dict[str, Any], param_group: dict[str, Any], validate: Callable[[dict[str, Any]], Any]
) -> dict[str, Any]:
    """``param_group`` completed with ``defaults`` and checked by ``validate``, before any append.

    ``torch.optim.Optimizer.add_param_group`` appends the group as its last act; an optimizer
    that validated the appended group afterwards kept a rejected group (and broke its next
    ``step()``). Call this first: ``validate`` receives a completed copy (it may normalise
    values in it, e.g. betas to floats), and only when it passes are the completed values
    written into ``param_group``, which the caller then hands to ``add_param_group``.
    """
    if not isinstance(param_group, dict):
        raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
    trial = {k: v for k, v in param_group.items() if k != "params"}
    for key, value in defaults.items():
        trial.setdefault(key, value)
    validate(trial)
    param_group.update(trial)
    return param_group
