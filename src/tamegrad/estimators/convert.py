"""Swap a model's layers for memory-saving estimator layers in place, and back.

    model = convert(model, method="rad", keep_frac=0.1, exclude="fc")
    ...                      # train; state_dict keys are those of the plain model
    model = revert(model)    # plain layers again, the same Parameter objects

Module-name patterns (``include`` / ``exclude``) are matched against the qualified names of
``model.named_modules()`` (``"features.0"``, ``"layer1.0.conv1"``, ``"fc"``):

* a plain pattern is an ``fnmatch`` glob over the whole name (``"layer*.conv?"``,
  ``"*.shortcut.*"``, ``"fc"``); ``*`` also crosses dots;
* a pattern starting with ``re:`` is a Python regular expression that must match the whole
  name (``"re:layer[12]\\..*"``).

A layer is converted when its type is one the method handles (exact type: a subclass of
``nn.Linear`` with its own ``forward`` is never replaced), it matches some include pattern
(none given: every layer of a handled type) and no exclude pattern. Call :func:`convert` before
wrapping the model in DDP and before building the optimizer's state that depends on modules
(parameters are shared, so an optimizer built earlier keeps working).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Any

from torch import nn

from ._registry import get_method
from .lean import LEAN_FACTORIES

__all__ = ["convert", "converted_layers", "is_converted", "revert"]


def _as_patterns(name: str, value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    pats = (value,) if isinstance(value, str) else tuple(value)
    for p in pats:
        if not isinstance(p, str) or not p:
            raise ValueError(f"Invalid {name}: {value!r} (expected non-empty strings)")
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as exc:
                raise ValueError(f"Invalid {name} pattern {p!r}: {exc}") from exc
    return pats


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def is_converted(module: nn.Module) -> bool:
    """Whether ``module`` is a converted estimator layer (it has a ``to_plain`` method)."""
    return callable(getattr(module, "to_plain", None))


def converted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> converted layer, for every converted layer in ``model``."""
    return {n: m for n, m in model.named_modules() if is_converted(m)}


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def convert(
    model: nn.Module,
    method: str = "rad",
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    lean: bool = False,
    **options: Any,
) -> nn.Module:
    """Replace matching layers of ``model`` with ``method``'s estimator layers; return the model.

    ``options`` go to the method's layer factories (for ``rad``: ``keep_frac`` and
    ``variant``). ``lean=True`` also converts ``nn.ReLU`` and ``nn.AvgPool2d`` layers
    (matching the same patterns) to their exact memory-lean versions
    (:mod:`tamegrad.estimators.lean`), as the ``lean`` method does on its own.

    Every new layer is built (and every option validated) before the first swap, so a
    ``ValueError`` leaves the model untouched. ``ValueError`` is raised for an unknown method
    (listing the known ones), an unknown option, an include pattern that matches no
    convertible layer (naming it), a model with nothing to convert, or a model that already
    holds converted layers (``revert`` it first). A layer reachable under several names (a
    shared module) is converted once and replaced under every name. When ``model`` itself is
    a convertible layer the converted layer is returned (use the return value).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"convert expects an nn.Module, got {type(model).__name__}")
    spec = get_method(method)
    if not isinstance(lean, bool):
        raise ValueError(f"Invalid lean: {lean!r} (expected True or False)")
    factories = dict(spec.factories)
    if lean:
        for typ, fac in LEAN_FACTORIES.items():
            factories.setdefault(typ, fac)
    if spec.options is not None:
        unknown = sorted(set(options) - set(spec.options))
        if unknown:
            valid = ", ".join(sorted(spec.options)) or "none"
            raise ValueError(
                f"estimator method {spec.name!r} does not accept option(s) "
                f"{', '.join(unknown)}; valid options: {valid}"
            )
        options = {**spec.options, **options}
    inc = _as_patterns("include", include)
    exc = _as_patterns("exclude", exclude)
    if inc is None:
        inc = spec.default_include
    if exc is None:
        exc = spec.default_exclude
    already = converted_layers(model)
    if already:
        names = ", ".join(list(already)[:5])
        raise ValueError(
            f"model already holds converted layers ({names}); call revert(model) before "
            "converting it again"
        )

    named = list(model.named_modules(remove_duplicate=False))
    candidates = [(n, m) for n, m in named if type(m) in factories]
    if inc is not None:
        unmatched = [p for p in inc if not any(_matches(p, n) for n, _ in candidates)]
        if unmatched:
            raise ValueError(
                f"include pattern(s) {unmatched} match no layer that method {spec.name!r} "
                f"converts ({', '.join(t.__name__ for t in factories)}); "
                f"convertible layers: {[n for n, _ in candidates][:20]}"
            )
    chosen = [
        (n, m)
        for n, m in candidates
        if (inc is None or any(_matches(p, n) for p in inc))
        and not (exc is not None and any(_matches(p, n) for p in exc))
    ]
    if not chosen:
        raise ValueError(
            f"no layer of {type(model).__name__} to convert with method {spec.name!r} "
            f"(types {', '.join(t.__name__ for t in factories)}; include={inc}, "
            f"exclude={exc})"
        )
    new_by_id: dict[int, nn.Module] = {}
    for _, m in chosen:
        if id(m) not in new_by_id:
            new_by_id[id(m)] = factories[type(m)](m, **options)
    # a module shared by a chosen name and an excluded name is converted everywhere it appears
    for n, m in named:
        if id(m) in new_by_id and n:
            _set_submodule(model, n, new_by_id[id(m)])
    return new_by_id.get(id(model), model)


def revert(model: nn.Module) -> nn.Module:
    """Swap every converted layer of ``model`` back to its plain layer (same ``Parameter``
    objects); return the model (or the plain layer when ``model`` itself was converted).
    A model without converted layers is returned unchanged."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"revert expects an nn.Module, got {type(model).__name__}")
    plain_by_id: dict[int, nn.Module] = {}
    for n, m in list(model.named_modules(remove_duplicate=False)):
        if not is_converted(m):
            continue
        if id(m) not in plain_by_id:
            plain_by_id[id(m)] = m.to_plain()  # type: ignore[operator]
        if n:
            _set_submodule(model, n, plain_by_id[id(m)])
    return plain_by_id.get(id(model), model)
