"""``InfoBatchSampler``: loss-based pruning with rescaling (Qin et al., InfoBatch, ICLR 2024).

At the start of each epoch (:meth:`set_epoch`) the plan of the epoch is fixed from the table:

* examples already scored whose latest loss is below the mean of the scored ones are "well
  learned" (``m`` of them); ``d = round(prune_frac * m)`` of them, chosen at random, are skipped
  this epoch (at least one is kept); the ``k = m - d`` kept ones get weight ``m / k`` (about
  ``1 / (1 - prune_frac)``), so each well-learned example contributes its loss once in
  expectation and the epoch's summed gradient ``sum_i w_i g_i`` is unbiased for the full-data
  one (exactly: each is kept with probability ``k / m``);
* every other example (above the mean, or never scored: nothing is pruned in the first epoch)
  is kept with weight 1;
* the last ``floor(anneal_frac * epochs)`` epochs use the full data (InfoBatch's annealing,
  ``delta = 1 - anneal_frac = 0.875`` by default).

The kept examples are shuffled and cut into global batches of ``batch_size``; a final partial
batch is kept (``drop_last=False``), merged into the previous batch when it has fewer examples
than there are ranks, and its rank slices carry the correction factor of
:func:`~tamegrad.sampling._base.slice_for_rank`.

Epoch length: it changes from epoch to epoch. :meth:`batches_in_epoch` is exact for past
epochs, for the current one (fixed by ``set_epoch``, before its first batch), for epochs
without pruning (annealing, or while nothing is scored); for later pruned epochs it is the
prediction from the current table (the table changes in between). So a per-step lr schedule
must not be built from ``epochs * len(first epoch)``: make the schedule a function of the
fractional epoch :meth:`~TableSampler.epoch_progress` (``epoch + step / batches_in_epoch``),
which ends exactly at the last step whatever the lengths; :meth:`total_steps` is the best
estimate of the total for display and budgets.

Differences from the public InfoBatch code: the number pruned is fixed (``round(r * m)``)
rather than Bernoulli, with the exact weight ``m / k``; the mean is over scored examples only
(the reference initialises unscored examples to a high constant); the plan lives in the
sampler's state, so a run resumed mid-epoch replays the same epoch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tamegrad.distributed import DistContext
from tamegrad.optim._validation import check_flag, check_int_at_least, check_unit_interval

from ._base import TableSampler

__all__ = ["InfoBatchSampler"]


class InfoBatchSampler(TableSampler):
    """Yields ``(indices, weights)`` of this rank for the kept examples of each epoch.

    Args:
        num_samples: examples in the data set (>= the world size).
        batch_size: the global batch (a multiple of the world size).
        epochs: the run's number of epochs (fixes when the annealing starts).
        prune_frac: fraction of the well-learned examples skipped per epoch, in [0, 1).
        anneal_frac: fraction of the epochs, at the end, on full data, in [0, 1].
        drop_last: drop a final partial batch (its examples then count for nothing: biased).
        seed: the generator's seed (the same on every rank).
        dist_context: the process group; default ``DistContext.current()``.
    """

    kind = "infobatch"

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        epochs: int,
        prune_frac: float = 0.5,
        anneal_frac: float = 0.125,
        drop_last: bool = False,
        seed: int = 0,
        dist_context: DistContext | None = None,
    ) -> None:
        super().__init__(num_samples, batch_size, seed=seed, dist_context=dist_context)
        if self.num_samples < self.dist.world_size:
            raise ValueError(
                f"Invalid num_samples: {num_samples} < world_size={self.dist.world_size}"
            )
        self.epochs = check_int_at_least("epochs", epochs, 1)
        self.prune_frac = check_unit_interval("prune_frac", prune_frac)
        self.anneal_frac = check_unit_interval("anneal_frac", anneal_frac, closed_right=True)
        check_flag("drop_last", drop_last)
        self.drop_last = drop_last
        #: epochs ``e < prune_until`` may prune; the rest train on the full data
        self.prune_until = self.epochs - math.floor(self.anneal_frac * self.epochs + 1e-9)
        self._history: dict[int, int] = {}
        self._check_ranks_agree()
        self._make_plan()

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(), "epochs": self.epochs, "prune_frac": self.prune_frac,
            "anneal_frac": self.anneal_frac, "drop_last": self.drop_last,
        }

    # -- the epoch plan --------------------------------------------------------------------

    def _well_learned(self) -> Tensor:
        """Mask of scored examples whose score is below the mean of the scored ones."""
        if not bool(self.seen.any()):
            return torch.zeros(self.num_samples, dtype=torch.bool)
        mean = self.scores[self.seen].to(torch.float64).mean()
        return self.seen & (self.scores.to(torch.float64) < mean)

    def _prune_count(self, m: int) -> int:
        if m == 0:
            return 0
        return min(math.floor(self.prune_frac * m + 0.5), m - 1)

    def _prunes(self, epoch: int) -> bool:
        return epoch < self.prune_until and self.prune_frac > 0.0

    def _make_plan(self) -> None:
        n = self.num_samples
        order = torch.arange(n)
        weights = torch.ones(n, dtype=torch.float64)
        m = d = 0
        if self._prunes(self.epoch):
            well = self._well_learned()
            m = int(well.sum())
            d = self._prune_count(m)
        if d:
            well_idx = well.nonzero().flatten()
            k = m - d
            kept = well_idx[torch.randperm(m, generator=self._generator)[:k]]
            rest = (~well).nonzero().flatten()
            order = torch.cat([rest, kept])
            weights = torch.cat([torch.ones(rest.numel(), dtype=torch.float64),
                                 torch.full((k,), m / k, dtype=torch.float64)])
        perm = torch.randperm(order.numel(), generator=self._generator)
        self._order = order[perm]
        self._weights = weights[perm].to(torch.float32)
        self._plan_info = {"well_learned": m, "pruned": d, "kept": int(order.numel()),
                           "rescale": (m / (m - d)) if d else 1.0}

    def _count_batches(self, kept: int) -> int:
        full, rest = divmod(kept, self.batch_size)
        if rest == 0 or self.drop_last:
            return full
        if rest < self.dist.world_size and full >= 1:
            return full  # merged into the previous batch
        return full + 1

    def _bounds(self, j: int) -> tuple[int, int]:
        kept, b = self._order.numel(), self.batch_size
        last = self._count_batches(kept) - 1
        end = kept if (j == last and not self.drop_last) else (j + 1) * b
        return j * b, end

    # -- public ----------------------------------------------------------------------------

    def batches_in_epoch(self, epoch: int) -> int:
        """Batches of epoch ``epoch``: exact for past epochs, the current one and epochs without
        pruning; for later pruned epochs, the prediction from the current table."""
        e = check_int_at_least("epoch", epoch, 0)
        if e == self.epoch:
            return self._count_batches(self._order.numel())
        if e in self._history:
            return self._history[e]
        kept = self.num_samples
        if self._prunes(e):
            kept -= self._prune_count(int(self._well_learned().sum()))
        return self._count_batches(kept)

    def total_steps(self, epochs: int | None = None) -> int:
        """Sum of :meth:`batches_in_epoch` over epochs ``0 .. epochs-1`` (default: all)."""
        last = self.epochs if epochs is None else check_int_at_least("epochs", epochs, 0)
        return sum(self.batches_in_epoch(e) for e in range(last))

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` and fix its plan from the table now (a no-op for the current
        epoch, so a resumed run continues its plan)."""
        old, old_len = self.epoch, len(self)
        super().set_epoch(epoch)
        if self.epoch != old:
            self._history[old] = old_len

    def _on_new_epoch(self) -> None:
        self._make_plan()

    def _draw_global(self) -> tuple[Tensor, Tensor]:
        lo, hi = self._bounds(self._position)
        return self._order[lo:hi], self._weights[lo:hi]

    # -- stats and state -------------------------------------------------------------------

    def _extra_stats(self) -> dict[str, Any]:
        """``well_learned``, ``pruned`` (skipped this epoch), ``kept`` (examples in the epoch),
        ``rescale`` (weight of a kept well-learned example), ``batches_in_epoch``,
        ``full_data`` (no pruning this epoch)."""
        return {**self._plan_info, "batches_in_epoch": len(self),
                "full_data": self._plan_info["pruned"] == 0}

    def _extra_state(self) -> dict[str, Any]:
        return {"order": self._order.clone(), "weights": self._weights.clone(),
                "plan_info": dict(self._plan_info), "history": dict(self._history)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._order = torch.as_tensor(state["order"], dtype=torch.int64).clone()
        self._weights = torch.as_tensor(state["weights"], dtype=torch.float32).clone()
        self._plan_info = dict(state["plan_info"])
        self._history = {int(k): int(v) for k, v in state["history"].items()}
