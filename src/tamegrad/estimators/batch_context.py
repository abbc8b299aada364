"""Tell a model's estimator layers which dataset examples the rows of the current batch are.

    cache = norm_cache(model)                 # None when no layer of the model uses one
    with batch_context(model, example_indices):
        loss = loss_fn(model(x), y)           # layers look up last-visit gradient norms
    loss.backward()                           # layers record this visit's norms
    if cache is not None:
        cache.sync(dist_ctx)                  # DDP: every rank ends with the same cache

or, with the backward inside and the DDP sync on exit:
``with batch_context(model, idx, sync=True): loss_fn(model(x), y).backward()``.

The indices are set on the layers *of that model only* (no global state): two models (or two
threads with two models) never see each other's batch. Only the forward pass needs the
context (each layer keeps the batch's indices with its saved tensors for its backward), so
``backward`` may run inside or outside it. Contexts nest; leaving one restores the previous
indices. ``model`` may be wrapped in ``DistributedDataParallel`` (its ``.module`` is used).

A layer takes part when it has ``uses_batch_context = True`` and a ``batch_examples``
attribute (``WTACRSLinear``); layers with ``uses_norm_cache = True`` also get the model's
:class:`GradNormCache` and their qualified name as ``cache_key``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from ..distributed import DistContext
from .norm_cache import GradNormCache, as_example_indices

__all__ = ["batch_context", "norm_cache"]

_CACHE_ATTR = "_tamegrad_grad_norm_cache"


def _unwrap(model: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    while isinstance(model, (DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _aware(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in _unwrap(model).named_modules()
        if getattr(m, "uses_batch_context", False)
    ]


def norm_cache(model: nn.Module, cache: GradNormCache | None = None) -> GradNormCache | None:
    """The :class:`GradNormCache` shared by ``model``'s layers that use one, or ``None`` when
    no layer uses a cache.

    Which cache: ``cache`` when given (it replaces any other); else the one kept on the model
    by an earlier call; else one a layer was built with (``convert(..., norm_cache=c)``);
    else a new one. Each layer is (re)bound to it under its qualified module name, so call
    this (or :func:`batch_context`, which calls it) after :func:`convert`. The trainer
    checkpoints the cache's ``state_dict()`` and calls its ``sync()`` after backward under DDP
    (or lets ``batch_context(..., sync=True)`` do it).
    """
    root = _unwrap(model)
    users = [(n, m) for n, m in _aware(root) if getattr(m, "uses_norm_cache", False)]
    if not users:
        return None
    if cache is None:
        kept = root.__dict__.get(_CACHE_ATTR)
        built = [c for _, m in users if isinstance(c := getattr(m, "norm_cache", None),
                                                    GradNormCache)]
        cache = kept if isinstance(kept, GradNormCache) else (built[0] if built else None)
    elif not isinstance(cache, GradNormCache):
        raise ValueError(f"Invalid cache: {cache!r} (expected a GradNormCache)")
    if cache is None:
        cache = GradNormCache()
    root.__dict__[_CACHE_ATTR] = cache
    for name, m in users:
        setattr(m, "norm_cache", cache)  # noqa: B010 (plain attributes, not submodules)
        setattr(m, "cache_key", name)  # noqa: B010
    return cache


@contextmanager
def batch_context(
    model: nn.Module, examples: Tensor | Sequence[int], *, sync: bool | DistContext = False
) -> Iterator[None]:
    """Within the block, ``model``'s estimator layers treat row ``b`` of their input's first
    dimension as dataset example ``examples[b]`` (see the module doc). A model without such
    layers is left alone, so a trainer can always enter it.

    ``sync``: when true (or a :class:`DistContext`), a block that ends without an exception
    then calls the cache's :meth:`GradNormCache.sync` (a collective under DDP: put the backward
    inside the block, and every rank must enter and leave it at the same points)."""
    ex = as_example_indices(examples, "batch_context: examples")
    layers = _aware(model)
    if not layers:
        yield
        return
    cache = norm_cache(model)
    previous = [m.batch_examples for _, m in layers]
    for _, m in layers:
        m.batch_examples = ex
    try:
        yield
    finally:
        for (_, m), prev in zip(layers, previous):
            m.batch_examples = prev
    if sync is not False and cache is not None:
        cache.sync(sync if isinstance(sync, DistContext) else None)
