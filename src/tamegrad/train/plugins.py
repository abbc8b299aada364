"""From a :class:`TrainConfig` to the :class:`RunExtensions` of its run: the estimator layers
(``config.estimator``), the activation meter and the sampler (``config.sampler``).

* **Estimator.** ``tamegrad.estimators.convert(model, config.estimator, keep_frac=...,
  include=..., exclude=..., **estimator_options)`` is the model-building step's conversion. A
  method whose layers use a gradient-norm cache (WTA-CRS) gets the cache checkpointed as the
  named state ``"norm_cache"``, and every training micro-batch runs inside
  ``estimators.batch_context(model, batch.indices, sync=dist)``, which tells the layers which
  examples they see and, under DDP, all-gathers the norms after backward so every rank keeps
  the same cache.
* **Activation bytes.** With an estimator (or ``measure_activations``) the first training
  micro-batch of every epoch (of every session, after a resume) runs inside an
  ``ActivationMeter``; its report goes into that epoch's metrics row as ``mem_*`` fields
  (this rank's bytes; the meter costs a hook call per saved tensor on that one micro-batch).
* **Sampler.** ``"priority"`` / ``"infobatch"`` build ``tamegrad.sampling``'s samplers over the
  training set with the global batch (``batch_size x world_size``) and the run's seed; their
  epoch statistics (weights, distinct examples, bookkeeping seconds) go into the metrics rows as
  ``sampler_*`` fields.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from ..data import Batch
from ..distributed import DistContext
from .config import TrainConfig
from .extensions import BatchSampler, RunExtensions, SamplerSpec

__all__ = ["extensions_for", "merge"]


class _EpochMeter:
    """Measures the activation bytes of the first micro-batch it sees after each report."""

    def __init__(self) -> None:
        self.pending = True
        self.last: dict[str, Any] = {}

    @contextlib.contextmanager
    def maybe_measure(self, model: nn.Module) -> Iterator[None]:
        if not self.pending:
            yield
            return
        from ..estimators import ActivationMeter

        self.pending = False
        with ActivationMeter(model, per_layer=False) as meter:
            yield
        self.last = meter.report().as_metrics()

    def epoch_metrics(self) -> dict[str, Any]:
        row, self.last, self.pending = self.last, {}, True
        return row


class _NormCacheState:
    """The converted model's gradient-norm cache as a named state (empty when the method's
    layers keep none); registered before the model exists, bound when it is converted."""

    def __init__(self) -> None:
        self.cache: Any = None

    def state_dict(self) -> dict[str, Any]:
        return self.cache.state_dict() if self.cache is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.cache is not None:
            self.cache.load_state_dict(state)
        elif state:
            raise ValueError("the checkpoint holds a gradient-norm cache this model has no use for")


def _estimator_part(config: TrainConfig, ext: RunExtensions) -> None:
    from .. import estimators

    method = str(config.estimator)
    options = dict(config.estimator_options)
    if config.keep_frac is not None:
        options["keep_frac"] = config.keep_frac
    if config.estimator_include is not None:
        options["include"] = list(config.estimator_include)
    if config.estimator_exclude is not None:
        options["exclude"] = list(config.estimator_exclude)

    cache = _NormCacheState()

    def convert(model: nn.Module) -> nn.Module:
        model = estimators.convert(model, method, **options)
        cache.cache = estimators.norm_cache(model)
        return model

    ext.convert_model = convert
    ext.states["norm_cache"] = cache


def _sampler_part(config: TrainConfig, ext: RunExtensions) -> None:
    from .. import sampling

    made: list[Any] = []

    def make(spec: SamplerSpec) -> BatchSampler:
        global_batch = spec.batch_size * spec.dist.world_size
        opts = dict(config.sampler_options)
        if config.sampler == "priority":
            sampler: Any = sampling.PrioritySampler(
                spec.num_samples, global_batch, seed=spec.seed, dist_context=spec.dist, **opts)
        else:
            opts.setdefault("epochs", config.epochs)
            sampler = sampling.InfoBatchSampler(
                spec.num_samples, global_batch, seed=spec.seed, dist_context=spec.dist, **opts)
        if config.sampler == "priority" and opts.get("presample") is not None:
            sampler.set_scorer(spec.score)  # pre-sample-and-score: the model scores candidates
        made.append(sampler)
        return sampler  # type: ignore[no-any-return]

    def stats() -> dict[str, Any]:
        return {f"sampler_{k}": v for k, v in made[-1].stats().items()} if made else {}

    ext.make_sampler = make
    ext.epoch_metrics.append(stats)


def merge(config_part: RunExtensions, user: RunExtensions | None) -> RunExtensions:
    """The config's extensions plus a caller's own: conversions run config's first, batch
    contexts nest (config's outside), metrics and states add up; two samplers, or a state name
    used twice, are a ``ValueError``."""
    if user is None:
        return config_part
    if config_part.make_sampler is not None and user.make_sampler is not None:
        raise ValueError("extensions.make_sampler conflicts with the config's sampler")
    clash = sorted(set(config_part.states) & set(user.states))
    if clash:
        raise ValueError(f"extensions.states names {', '.join(clash)} already in use")
    first_convert, then_convert = config_part.convert_model, user.convert_model
    outer, inner = config_part.batch_context, user.batch_context

    def convert(model: nn.Module) -> nn.Module:
        for fn in (first_convert, then_convert):
            if fn is not None:
                model = fn(model)
        return model

    @contextlib.contextmanager
    def nested(model: nn.Module, batch: Batch) -> Iterator[None]:
        assert outer is not None and inner is not None
        with outer(model, batch), inner(model, batch):
            yield

    return RunExtensions(
        convert_model=convert if first_convert and then_convert else
        (first_convert or then_convert),
        make_sampler=config_part.make_sampler or user.make_sampler,
        batch_context=nested if outer and inner else (outer or inner),
        states={**config_part.states, **user.states},
        epoch_metrics=[*config_part.epoch_metrics, *user.epoch_metrics],
    )


def extensions_for(config: TrainConfig, dist: DistContext | None = None) -> RunExtensions:
    """The extensions ``config`` asks for (none for a plain run); ``dist`` is the run's
    distributed context (the current one by default)."""
    ctx = dist if dist is not None else DistContext.current()
    ext = RunExtensions()
    if config.estimator is not None:
        _estimator_part(config, ext)
    if config.sampler != "uniform":
        _sampler_part(config, ext)
    if config.estimator is None and not config.measure_activations:
        return ext
    meter = _EpochMeter() if (config.estimator is not None or config.measure_activations) else None
    uses_batch = config.estimator is not None

    @contextlib.contextmanager
    def batch_context(model: nn.Module, batch: Batch) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if meter is not None:
                stack.enter_context(meter.maybe_measure(model))
            if uses_batch:
                from ..estimators import batch_context as layers_context

                stack.enter_context(layers_context(model, batch.indices, sync=ctx))
            yield

    ext.batch_context = batch_context
    if meter is not None:
        ext.epoch_metrics.append(meter.epoch_metrics)
    return ext
