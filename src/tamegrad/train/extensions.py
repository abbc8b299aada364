"""The trainer's seams: what a sampler, a layer conversion or an estimator plugs into.

Not a callback system: :class:`RunExtensions` is a small record of optional functions and
objects that :func:`tamegrad.train.train` calls at fixed points of a step.

* ``convert_model(model) -> model``: applied once right after the model is created and before it
  is moved to the device, wrapped in DDP and handed to the optimizer (e.g.
  ``tamegrad.estimators.convert``). Its checkpoint keys must be those of the plain model (or the
  conversion must be applied identically on resume, which the trainer does).
* ``make_sampler(SamplerSpec) -> BatchSampler``: replaces the loader's shuffled order. Each batch
  comes with example indices and optional per-example weights; the trainer weights the
  per-example losses with them and hands the (unweighted) per-example losses back through
  ``sampler.update(indices, losses)`` after the forward pass of every micro-batch.
* ``batch_context(model, batch) -> context manager``: entered around the forward and backward
  pass of every training micro-batch (e.g. telling converted layers which examples are in the
  batch; its exit may run collectives: every rank enters it at the same points).
* ``states``: named objects with ``state_dict()``/``load_state_dict()`` saved in and restored
  from every checkpoint (the sampler, when present, is saved as ``"sampler"``). An object (or
  the optimizer) with a true ``state_is_per_rank`` attribute is saved by every rank into its
  own shard file; others are saved once, by rank 0, and every rank loads that copy.
* ``epoch_metrics``: functions called on every rank at the end of every epoch (before
  evaluation; they may run collectives) whose dicts are merged into that epoch's metrics row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from ..data import Batch
from ..distributed import DistContext

__all__ = ["BatchSampler", "RunExtensions", "SamplerSpec", "Stateful", "is_per_rank"]


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


def is_per_rank(obj: object) -> bool:
    """True when ``obj``'s state differs between ranks and each rank must save its own."""
    return bool(getattr(obj, "state_is_per_rank", False))


@dataclass(frozen=True)
class SamplerSpec:
    """What a sampler factory is told: data set size, per-process batch size, seed, ranks, and
    ``score(indices) -> losses``: the current model's per-example training losses on those
    examples (a forward pass in eval mode without gradients, for a pre-sample-and-score mode)."""

    num_samples: int
    batch_size: int
    seed: int
    dist: DistContext
    score: Callable[[Tensor], Tensor] | None = None


class BatchSampler(Protocol):
    """Chooses the examples of every training batch of this rank.

    ``set_epoch(e)`` is called before epoch ``e`` is iterated, also when a run resumes in the
    middle of ``e`` (then the sampler's restored state already says where it was, and
    ``set_epoch`` must not reset it). ``len()`` is then the number of batches of epoch ``e``
    (this rank); iterating yields ``(indices, weights)`` (int64 indices into the training set,
    float32 weights or None) from the current position on.
    """

    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]: ...

    def update(self, indices: Tensor, losses: Tensor) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


@dataclass
class RunExtensions:
    """Optional additions to a run (see the module docstring for when each is called)."""

    convert_model: Callable[[nn.Module], nn.Module] | None = None
    make_sampler: Callable[[SamplerSpec], BatchSampler] | None = None
    batch_context: Callable[[nn.Module, Batch], AbstractContextManager[Any]] | None = None
    states: dict[str, Stateful] = field(default_factory=dict)
    epoch_metrics: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
