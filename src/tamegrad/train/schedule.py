"""Learning-rate schedules: a ``LambdaLR`` stepped once per optimizer step.

Every schedule is a function of the optimizer-step counter ``t`` (0-based: the lr used by the
``t``-th update is ``base_lr * factor(t)``), so one scheduler type covers all of them and its
``state_dict`` (essentially ``last_epoch`` = steps taken) is all a checkpoint needs:

* ``"constant"``: factor 1.
* ``"step"``: the paper's schedule, piecewise constant per *epoch*: x1 for epochs
  ``e < 0.5 * epochs``, x0.1 for ``0.5 * epochs <= e < 0.75 * epochs``, x0.01 after
  (``e = t // steps_per_epoch``, 0-based). With 200 epochs: x0.1 from epoch 100, x0.01 from 150.
* ``"cosine"``: annealed per *step* (smoother than per epoch with few epochs):
  ``0.5 * (1 + cos(pi * t / total_steps))``, from 1 at the first step towards 0 at the end; no
  warm-up and no restarts.

``steps_per_epoch`` must be the number of optimizer steps per epoch (micro-batches divided by
``grad_accum``, rounded up); a schedule built with the wrong value drifts from the epoch grid.

When epochs change length during a run (a sampler that prunes examples, such as InfoBatch), no
fixed ``steps_per_epoch`` is right: pass ``progress``, a function returning the fractional
epoch reached so far (epoch index + fraction of its steps done), and the factor is computed
from it (:func:`lr_factor_at`), so the schedule ends exactly at the run's last step whatever
the epochs' lengths. With equal epochs both forms give the same factor up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .config import SCHEDULES


def _step_factor(epoch: int, epochs: int) -> float:
    if 4 * epoch >= 3 * epochs:
        return 0.01
    if 2 * epoch >= epochs:
        return 0.1
    return 1.0


def _cosine_factor(done: float, total: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(done, total) / total))


def _unknown(schedule: str) -> ValueError:
    return ValueError(f"Unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def lr_factor(schedule: str, step: int, *, epochs: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return _step_factor(step // steps_per_epoch, epochs)
    if schedule == "cosine":
        return _cosine_factor(step, epochs * steps_per_epoch)
    raise _unknown(schedule)


def lr_factor_at(schedule: str, progress: float, *, epochs: int) -> float:
    """Multiplier of the base learning rate at fractional epoch ``progress`` (0 = start)."""
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return _step_factor(math.floor(progress), epochs)
    if schedule == "cosine":
        return _cosine_factor(progress, epochs)
    raise _unknown(schedule)


def create_scheduler(
    optimizer: Optimizer, schedule: str, *, epochs: int, steps_per_epoch: int,
    progress: Callable[[], float] | None = None,
) -> LambdaLR:
    """A ``LambdaLR`` for ``schedule``; call ``.step()`` after every optimizer step.

    ``progress``: see the module docstring (epochs of changing length)."""
    if schedule not in SCHEDULES:
        raise _unknown(schedule)
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"epochs and steps_per_epoch must be >= 1, got {epochs} and {steps_per_epoch}"
        )

    def factor(step: int) -> float:
        return lr_factor(schedule, step, epochs=epochs, steps_per_epoch=steps_per_epoch)

    def factor_at(step: int) -> float:
        assert progress is not None
        return lr_factor_at(schedule, progress(), epochs=epochs)

    fn: Callable[[int], float] = factor if progress is None else factor_at
    return LambdaLR(optimizer, fn)
