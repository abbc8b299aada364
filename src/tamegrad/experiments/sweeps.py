"""Learning-rate sweeps as grid entries: families, batch-size shifts, sweep extensions.

A sweep point is a :class:`~tamegrad.train.grid.GridEntry` with a ``family``; its batch size is
its ``batch_size`` override (or the base config's). Entries are identified by these fields,
never by their labels (``"<family> lr=<lr> b<batch>"``, for people).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry
from tamegrad.train.sweep import format_lr, round_lr, sweep_label

#: Learning rates of every sweep, as multiples of the family's (batch-shifted) centre.
SWEEP_FACTORS = (1 / 3, 1.0, 3.0)

#: Learning-rate points a sweep may grow by on each side (``extend_sweeps``): with the 3x step
#: of :data:`SWEEP_FACTORS`, up to 9x beyond the suite's own lowest or highest lr.
MAX_EXTENSIONS_PER_SIDE = 2


@dataclass(frozen=True)
class OptimizerFamily:
    """One optimizer of a sweep comparison: everything fixed except the learning rate.

    ``centre`` is the middle of the lr sweep at the suite's reference batch size;
    ``optimizer_kwargs`` go to :func:`tamegrad.optim.create`; ``overrides`` are the
    :class:`TrainConfig` changes the family needs (e.g. ``clip_grad_norm``).
    """

    name: str
    optimizer: str
    centre: float
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


def batch_lr_scale(batch_size: int, reference_batch: int) -> float:
    """Shift of a sweep's centre for another batch size: ``sqrt(batch / reference)``.

    The square-root rule (batch 128 -> 8 divides the centre by 4, 64 -> 8 by 2.83) sits between
    the linear rule usually quoted for SGD and no change, which is close to right for the
    normalised and sign-like methods; the 9x-wide sweep around it covers both.
    """
    return math.sqrt(batch_size / reference_batch)


def lr_sweep(centre: float, factors: tuple[float, ...] = SWEEP_FACTORS) -> list[float]:
    """The sweep's learning rates: ``centre * f`` for each factor, rounded by :func:`round_lr`."""
    return [round_lr(centre * f) for f in factors]


def sweep_point(family: OptimizerFamily, lr: float, batch: int) -> GridEntry:
    """The entry of ``family`` at ``lr`` and batch size ``batch``."""
    return GridEntry(
        sweep_label(family.name, format_lr(lr), batch),
        family.optimizer,
        lr,
        dict(family.optimizer_kwargs),
        overrides={**family.overrides, "batch_size": batch},
        family=family.name,
    )


def sweep_entries(
    families: list[OptimizerFamily], batch_sizes: tuple[int, ...], reference_batch: int
) -> list[GridEntry]:
    """Grid entries ``family x batch size x lr``, labelled ``"<family> lr=<lr> b<batch>"``.

    Each family's centre is shifted by :func:`batch_lr_scale` for every batch size, then swept
    by :data:`SWEEP_FACTORS`. The batch size is an entry override, so both batch sizes share one
    grid, one results table and one figure. Order: batch size, family, increasing lr.
    """
    entries: list[GridEntry] = []
    for batch in batch_sizes:
        scale = batch_lr_scale(batch, reference_batch)
        for fam in families:
            entries.extend(sweep_point(fam, lr, batch) for lr in lr_sweep(fam.centre * scale))
    return entries


def batch_of(entry: GridEntry, base: TrainConfig) -> int:
    """The batch size the entry runs at."""
    return int(entry.overrides.get("batch_size", base.batch_size))


def with_extensions(
    entries: list[GridEntry], extensions: list[dict[str, Any]], base: TrainConfig
) -> list[GridEntry]:
    """``entries`` plus the recorded sweep extensions, each family's points in lr order.

    An extension ``{"family", "batch_size", "lr"}`` copies the entry of the same family and
    batch size (optimizer, its kwargs, overrides) at a new lr; one whose family is not among
    ``entries`` (e.g. left out by ``--only``) is skipped.
    """
    templates: dict[tuple[str, int], GridEntry] = {}
    for e in entries:
        if e.family is not None:
            templates.setdefault((e.family, batch_of(e, base)), e)
    labels = {e.label for e in entries}
    extra: list[GridEntry] = []
    for ext in extensions:
        key = (str(ext["family"]), int(ext["batch_size"]))
        if key not in templates:
            continue
        lr = float(ext["lr"])
        label = sweep_label(key[0], format_lr(lr), key[1])
        if label not in labels:
            labels.add(label)
            extra.append(replace(templates[key], label=label, lr=lr))
    if not extra:
        return list(entries)
    order = {key: i for i, key in enumerate(templates)}

    def position(e: GridEntry) -> tuple[int, float]:
        if e.family is None:
            return (-1, 0.0)
        return (order[(e.family, batch_of(e, base))], float(e.lr or 0.0))

    return sorted([*entries, *extra], key=position)
