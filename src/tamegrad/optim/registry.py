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

from torch.optim import Optimizer

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


def _accepted_kwargs(factory: Factory) -> set[str] | None:
    """Keyword names ``factory`` accepts, or None when it takes ``**kwargs``."""
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    sig = inspect.signature(target)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n in sig.parameters if n not in ("self", "params")}


def create(name: str, params: Any, **hparams: Any) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``params`` with ``hparams``."""
    spec = describe(name)
    kwargs = {**spec.defaults, **hparams}
    accepted = _accepted_kwargs(spec.factory)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(
                f"Optimizer {spec.name!r} does not accept {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(accepted))}"
            )
    return spec.factory(params, **kwargs)
