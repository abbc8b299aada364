"""Parameter groups built from a model, timm / nanoGPT style.

* :func:`param_groups`: weight decay on weight matrices and kernels only (parameters with
  ``ndim >= 2``); biases, norm scales and other 1-D or scalar parameters get
  ``weight_decay=0`` unless ``no_decay_1d=False``; optionally one group (or two) per module.
* :func:`module_blocks`: ``(module name, its own parameters)`` for every module that directly
  holds trainable parameters, in model order: the per-module blocks that a block-wise
  optimizer (e.g. mL-BFGS's ``blocks=``) can take.

Used by :func:`tamegrad.optim.create` when it is given a model and ``no_decay_1d=True`` or
``per_module=True``; with neither, ``create(name, model)`` is ``create(name,
model.parameters())``.

What this cannot do: it decides by shape, not by module type, so a 1-D parameter that should be
decayed (e.g. a learned 1-D embedding table) needs its own group; frozen parameters
(``requires_grad=False``) are left out of every group; a parameter shared by several modules is
placed once, with the first module that holds it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ._validation import check_flag, check_nonnegative

__all__ = ["module_blocks", "param_groups"]


def module_blocks(model: nn.Module) -> list[tuple[str, list[Tensor]]]:
    """``(name, parameters)`` of each module holding trainable parameters of its own.

    In ``model.named_modules()`` order; a module's parameters are its direct ones
    (``recurse=False``), so a container module with only children is skipped and every
    parameter appears in exactly one block. The root module's own parameters are named ``""``.

    >>> blocks = [ps for _, ps in module_blocks(model)]  # doctest: +SKIP
    >>> opt = create("mlbfgs", model.parameters(), lr=0.1, blocks=blocks)  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"module_blocks needs an nn.Module, got {type(model).__name__}")
    seen: set[int] = set()
    blocks: list[tuple[str, list[Tensor]]] = []
    for name, module in model.named_modules():
        own = []
        for p in module.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                own.append(p)
        if own:
            blocks.append((name, own))
    return blocks


def _split(params: list[Tensor], weight_decay: float, no_decay_1d: bool) -> list[dict[str, Any]]:
    if not no_decay_1d:
        return [{"params": params, "weight_decay": weight_decay}] if params else []
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    no_decay_1d: bool = True,
    per_module: bool = False,
) -> list[dict[str, Any]]:
    """Param groups of ``model``'s trainable parameters, ready for any ``torch.optim`` optimizer.

    Args:
        model: the module whose parameters are grouped.
        weight_decay: the decay of the decayed group(s) (every group gets an explicit
            ``weight_decay``).
        no_decay_1d: parameters with ``ndim < 2`` (biases, norm weights, scalars) get
            ``weight_decay=0``. With ``False`` every parameter is decayed.
        per_module: one group per module of :func:`module_blocks` (two when ``no_decay_1d``
            splits it), in model order, instead of one decayed and one undecayed group.

    Empty groups are dropped. The groups hold no other keys, so each optimizer's own defaults
    (lr, momentum, ...) apply to them.
    """
    check_nonnegative("weight_decay", weight_decay)
    check_flag("no_decay_1d", no_decay_1d)
    check_flag("per_module", per_module)
    blocks = module_blocks(model)
    if per_module:
        return [g for _, ps in blocks for g in _split(ps, weight_decay, no_decay_1d)]
    return _split([p for _, ps in blocks for p in ps], weight_decay, no_decay_1d)
