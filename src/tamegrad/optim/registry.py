"""Build any tamegrad or baseline optimizer by name.

``create("trsgd", model.parameters(), lr=0.1, momentum=0.9)`` is the single entry point used by
the trainer and the CLI. Each entry is a factory ``(params, **hparams) -> Optimizer``; unknown
names and unknown hyper-parameters fail with a message that lists what is valid.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.optim import Optimizer

from ._validation import check_flag
from .param_groups import param_groups

Factory = Callable[..., Optimizer]


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    factory: Factory
    description: str
    defaults: dict[str, Any]


_REGISTRY: dict[str, OptimizerSpec] = {}


def register(name: str, factory: Factory, description: str, **defaults: Any) -> Factory:
    """Register ``factory`` under lower-case ``name``; ``defaults`` go before user args."""
    key = name.lower()
    if key in _REGISTRY:
        raise ValueError(f"optimizer {name!r} is already registered")
    _REGISTRY[key] = OptimizerSpec(key, factory, description, dict(defaults))
    return factory


def list_optimizers() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_REGISTRY)


def describe(name: str) -> OptimizerSpec:
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"Unknown optimizer {name!r}. Valid names: {', '.join(list_optimizers())}")
    return _REGISTRY[key]


#: options of :func:`create` itself (not of any factory)
CREATE_OPTIONS = ("no_decay_1d", "per_module")


def _signature(factory: Factory) -> inspect.Signature:
    return inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)  # type: ignore[misc]


def _accepted_kwargs(factory: Factory) -> set[str] | None:
    """Keyword names ``factory`` accepts, or None when it takes ``**kwargs`` it cannot name.

    A factory that forwards ``**kwargs`` to a registered optimizer names it in its
    ``base_optimizer`` attribute (the ``tr-<base>`` / ``lookahead-<base>`` composites do), and
    then accepts its own keywords plus the base's.
    """
    params = _signature(factory).parameters
    own = {
        n
        for n, p in params.items()
        if n not in ("self", "params")
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return own
    base = getattr(factory, "base_optimizer", None)
    if base is None:
        return None
    inner = _accepted_kwargs(describe(base).factory)
    return None if inner is None else own | inner


def _default(spec: OptimizerSpec, key: str, fallback: Any) -> Any:
    """The value ``key`` takes when the caller does not give it: registered default, then the
    factory's signature default, then (for a composite) its base's."""
    if key in spec.defaults:
        return spec.defaults[key]
    param = _signature(spec.factory).parameters.get(key)
    if param is not None and param.default is not inspect.Parameter.empty:
        return param.default
    base = getattr(spec.factory, "base_optimizer", None)
    return fallback if base is None else _default(describe(base), key, fallback)


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming every key of ``options`` that ``create(name, ...)`` rejects.

    Reads the factory's signature (and, for ``tr-<base>`` / ``lookahead-<base>``, the base's)
    plus :data:`CREATE_OPTIONS`; builds nothing, so it is cheap enough for argument parsing.
    Values are not checked (the optimizer's constructor does that). A factory taking
    ``**kwargs`` without naming its base cannot be checked and passes.
    """
    spec = describe(name)
    accepted = _accepted_kwargs(spec.factory)
    if accepted is None:
        return
    accepted |= set(CREATE_OPTIONS)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"Optimizer {spec.name!r} does not accept {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )


def create(
    name: str,
    params: Any,
    *,
    no_decay_1d: bool = False,
    per_module: bool = False,
    **hparams: Any,
) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``params`` with ``hparams``.

    ``params`` is what the optimizer takes (parameters or param groups) or a model
    (``nn.Module``: its ``parameters()``). Given a model, ``no_decay_1d=True`` leaves biases and
    norm weights (``ndim < 2``) undecayed and ``per_module=True`` makes one group per module
    (see :func:`tamegrad.optim.param_groups.param_groups`; the decay is ``hparams``'
    ``weight_decay`` or the optimizer's default). Both are off by default, so the default
    behaviour is unchanged. Unknown names and hyper-parameters raise ``ValueError``.
    """
    spec = describe(name)
    check_options(name, hparams)
    check_flag("no_decay_1d", no_decay_1d)
    check_flag("per_module", per_module)
    kwargs = {**spec.defaults, **hparams}
    if isinstance(params, nn.Module):
        if no_decay_1d or per_module:
            wd = kwargs.get("weight_decay", _default(spec, "weight_decay", 0.0))
            params = param_groups(
                params, weight_decay=wd, no_decay_1d=no_decay_1d, per_module=per_module
            )
        else:
            params = params.parameters()
    elif no_decay_1d or per_module:
        raise ValueError(
            "no_decay_1d / per_module group a model's parameters: pass the model (an nn.Module) "
            "in place of params, or build the groups with tamegrad.optim.param_groups"
        )
    return spec.factory(params, **kwargs)
