"""The torch optimizers the registry offers (``sgd``, ``adam``, ``adamw``, ``rmsprop``), checked.

Each class is the torch class unchanged except for ``add_param_group``: torch checks the
hyper-parameters in ``__init__`` only (and lets NaN through, since ``nan < 0`` is False), so a
group added later with ``lr=nan`` or ``lr=-1`` was accepted and stepped. Here every group, the
constructor's included, is checked before it is appended, with the rules of torch's
``__init__`` plus finiteness; a rejected group leaves the optimizer unchanged. State dicts are
torch's, so checkpoints move freely between these classes and torch's.
"""

from __future__ import annotations

from typing import Any

import torch

from ._validation import check_nonnegative, check_unit_interval, validated_group

__all__ = ["SGD", "Adam", "AdamW", "RMSprop"]


def _check_nonnegative(group: dict[str, Any], *names: str) -> None:
    for name in names:
        check_nonnegative(name, group[name])


def _check_sgd(group: dict[str, Any]) -> None:
    _check_nonnegative(group, "lr", "momentum", "weight_decay")
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError(
            "Invalid nesterov: Nesterov momentum requires momentum > 0 and dampening = 0 "
            f"(got momentum={group['momentum']}, dampening={group['dampening']})"
        )


def _check_adam(group: dict[str, Any]) -> None:
    _check_nonnegative(group, "lr", "eps", "weight_decay")
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r} (expected a pair (beta1, beta2))")
    check_unit_interval("betas[0]", betas[0])
    check_unit_interval("betas[1]", betas[1])


def _check_rmsprop(group: dict[str, Any]) -> None:
    _check_nonnegative(group, "lr", "eps", "momentum", "weight_decay", "alpha")


class SGD(torch.optim.SGD):
    """:class:`torch.optim.SGD` whose added param groups are validated before they are kept."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(validated_group(self.defaults, param_group, _check_sgd))


class Adam(torch.optim.Adam):
    """:class:`torch.optim.Adam` whose added param groups are validated before they are kept."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(validated_group(self.defaults, param_group, _check_adam))


class AdamW(torch.optim.AdamW):
    """:class:`torch.optim.AdamW` whose added param groups are validated before they are kept."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(validated_group(self.defaults, param_group, _check_adam))


class RMSprop(torch.optim.RMSprop):
    """:class:`torch.optim.RMSprop` whose added param groups are validated before they are
    kept."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(validated_group(self.defaults, param_group, _check_rmsprop))
