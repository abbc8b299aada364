"""tamegrad optimizers: every one a ``torch.optim.Optimizer``, all buildable by name.

>>> from tamegrad.optim import create, list_optimizers
>>> opt = create("trsgd", model.parameters(), lr=0.1, momentum=0.9)  # doctest: +SKIP

Composite names: ``"tr-<base>"`` wraps any registered base optimizer in
:class:`TrajectoryRegularized`, ``"lookahead-<base>"`` in :class:`Lookahead`
(``"lookahead"`` is ``"lookahead-sgd"``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from . import _torch_bases as _tb
from . import gssgd as _gssgd
from . import mlbfgs as _mlbfgs
from . import normalized as _normalized
from .gssgd import GeneralizedSignSGD
from .mlbfgs import MLBFGS
from .normalized import ClippedSGD, NormalizedSGD
from .param_groups import module_blocks, param_groups
from .registry import check_options, create, describe, list_optimizers, register
from .tradam import TRAdam, TRAdamW
from .trajectory import LAMBDA_W_LR_RATIO
from .trsgd import TRSGD
from .wrapper import Lookahead, TrajectoryRegularized, WrappedOptimizer

__all__ = [
    "LAMBDA_W_LR_RATIO",
    "MLBFGS",
    "TRSGD",
    "ClippedSGD",
    "GeneralizedSignSGD",
    "Lookahead",
    "NormalizedSGD",
    "TRAdam",
    "TRAdamW",
    "TrajectoryRegularized",
    "WrappedOptimizer",
    "check_options",
    "create",
    "describe",
    "list_optimizers",
    "module_blocks",
    "param_groups",
    "register",
]

_BASES: list[str] = []


def _register_base(name: str, factory: Any, description: str, **defaults: Any) -> None:
    register(name, factory, description, **defaults)
    _BASES.append(name)


# torch's classes with param groups validated before they are appended (see _torch_bases)
_register_base("sgd", _tb.SGD, "torch.optim.SGD (momentum, nesterov, L2 weight decay)")
_register_base("adam", _tb.Adam, "torch.optim.Adam")
_register_base("adamw", _tb.AdamW, "torch.optim.AdamW (decoupled weight decay)")
_register_base("rmsprop", _tb.RMSprop, "torch.optim.RMSprop")
_gssgd.register_all(_register_base)  # gssgd, signum, signsgd
_normalized.register_all(_register_base)  # normalized-sgd, clipped-sgd
_mlbfgs.register_all(register)  # mlbfgs, lbfgs-stochastic (no tr-/lookahead- composites)
register("trsgd", TRSGD, "TRSGD: SGD with trajectory regularization (paper: lr 0.1, lambda_w 0.01)")
register("tradam", TRAdam, "TRAdam: Adam with trajectory regularization (lr 1e-3, lambda_w 1e-4)")
register("tradamw", TRAdamW, "TRAdamW: TRAdam with decoupled weight decay")


def _tr_over(base: str) -> Any:
    def factory(
        params: Any,
        lambda_w: float | None = None,
        inner_steps: int = 10,
        inner_decay: bool = True,
        anchor_dtype: torch.dtype | str | None = None,
        **base_hparams: Any,
    ) -> Optimizer:
        return TrajectoryRegularized(
            create(base, params, **base_hparams),
            lambda_w=lambda_w,
            inner_steps=inner_steps,
            inner_decay=inner_decay,
            anchor_dtype=anchor_dtype,
        )

    factory.base_optimizer = base  # type: ignore[attr-defined]  # for registry.check_options
    return factory


def _lookahead_over(base: str) -> Any:
    def factory(params: Any, k: int = 5, alpha: float = 0.5, **base_hparams: Any) -> Optimizer:
        return Lookahead(create(base, params, **base_hparams), k=k, alpha=alpha)

    factory.base_optimizer = base  # type: ignore[attr-defined]  # for registry.check_options
    return factory


def register_composites(base: str) -> None:
    """Register ``tr-<base>`` and ``lookahead-<base>`` for an already registered base."""
    register(f"tr-{base}", _tr_over(base), f"TrajectoryRegularized({base})")
    register(f"lookahead-{base}", _lookahead_over(base), f"Lookahead({base})")


for _base in _BASES:
    register_composites(_base)
register("lookahead", _lookahead_over("sgd"), "Lookahead(SGD), k=5, alpha=0.5")
