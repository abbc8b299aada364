"""Registry of layer-conversion methods (``rad``, ``wtacrs``, ...) used by :func:`convert`.

A method maps plain layer *types* to factories. A factory takes the plain layer and the
method's options and returns a converted layer that shares the plain layer's ``Parameter``
objects (no copy) and can turn itself back into a plain layer with ``to_plain()``
(:class:`EstimatorLayer` provides both halves for layers that subclass the plain class).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

LayerFactory = Callable[..., nn.Module]
_M = TypeVar("_M", bound="EstimatorLayer")


@dataclass(frozen=True)
class Method:
    """A registered conversion method (see :func:`register_method`)."""

    name: str
    factories: Mapping[type[nn.Module], LayerFactory]
    default_include: tuple[str, ...] | None = None
    default_exclude: tuple[str, ...] | None = None
    options: Mapping[str, Any] | None = None  # accepted option -> default; None = not checked
    description: str = ""
    # extra: free-form per-method data a method's own helpers may read
    extra: Mapping[str, Any] = field(default_factory=dict)


_METHODS: dict[str, Method] = {}


def _patterns(name: str, value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    out = tuple(value)
    if not all(isinstance(p, str) for p in out):
        raise ValueError(f"Invalid {name}: {value!r} (expected a string or a list of strings)")
    return out


def register_method(
    name: str,
    factories: Mapping[type[nn.Module], LayerFactory],
    *,
    default_include: str | Iterable[str] | None = None,
    default_exclude: str | Iterable[str] | None = None,
    options: Mapping[str, Any] | None = None,
    description: str = "",
    overwrite: bool = False,
) -> Method:
    """Register conversion method ``name``.

    ``factories`` maps a plain layer type (matched by *exact* type, so a subclass of
    ``nn.Linear`` with its own ``forward`` is never silently replaced) to
    ``factory(plain_layer, **options) -> converted layer``. The converted layer must share the
    plain layer's ``Parameter`` objects and provide ``to_plain() -> nn.Module``.
    ``default_include`` / ``default_exclude`` are module-name patterns (see :func:`convert`)
    used when the caller gives none. ``options`` (name -> default), when given, lets
    :func:`convert` reject unknown option names with a ``ValueError`` before touching the
    model. Registering an existing name raises ``ValueError`` unless ``overwrite``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Invalid method name: {name!r} (expected a non-empty string)")
    key = name.lower()
    if key in _METHODS and not overwrite:
        raise ValueError(f"estimator method {name!r} is already registered")
    if not factories:
        raise ValueError(f"method {name!r}: factories must map at least one layer type")
    for typ, fac in factories.items():
        if not (isinstance(typ, type) and issubclass(typ, nn.Module)) or not callable(fac):
            raise ValueError(
                f"method {name!r}: factories must map nn.Module types to callables, "
                f"got {typ!r}: {fac!r}"
            )
    method = Method(
        key,
        dict(factories),
        _patterns("default_include", default_include),
        _patterns("default_exclude", default_exclude),
        None if options is None else dict(options),
        description,
    )
    _METHODS[key] = method
    return method


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``; ``ValueError`` listing the known ones otherwise."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _METHODS:
        known = ", ".join(available_methods()) or "none"
        raise ValueError(f"Unknown estimator method {name!r}. Known methods: {known}")
    return _METHODS[key]


class EstimatorLayer:
    """Mixin for converted layers that subclass their plain layer class.

    Subclasses set ``plain_type`` (e.g. ``nn.Linear``) and ``_estimator_attrs`` (the names of
    the attributes they add). :meth:`_adopt` builds a converted layer from a plain one and
    :meth:`to_plain` goes back; both share every ``Parameter`` and buffer object and keep the
    module's hooks, so a ``state_dict`` loads across and an optimizer built before the
    conversion keeps working.
    """

    plain_type: type[nn.Module] = nn.Module
    estimator_method: str = ""
    _estimator_attrs: tuple[str, ...] = ()

    @classmethod
    def _adopt(cls: type[_M], plain: nn.Module) -> _M:
        if type(plain) is not cls.plain_type:
            raise TypeError(
                f"{cls.__name__} converts {cls.plain_type.__name__} layers, got "
                f"{type(plain).__name__}"
            )
        new = cls.__new__(cls)
        assert isinstance(new, nn.Module)
        _copy_module_dict(plain, new)
        return new  # type: ignore[return-value]

    def to_plain(self) -> nn.Module:
        """A plain ``plain_type`` layer with the same parameters, buffers and hooks."""
        assert isinstance(self, nn.Module)
        plain = self.plain_type.__new__(self.plain_type)
        _copy_module_dict(self, plain, drop=self._estimator_attrs)
        return plain


def _copy_module_dict(src: nn.Module, dst: nn.Module, drop: Iterable[str] = ()) -> None:
    """Give ``dst`` the attributes of ``src``: new containers, the same tensors and hooks."""
    state = dict(src.__dict__)
    for k in drop:
        state.pop(k, None)
    for k in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
        if k in state:
            state[k] = type(state[k])(state[k])
    dst.__dict__.update(state)
