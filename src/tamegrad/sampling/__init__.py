"""Samplers that choose which examples each step trains on, with the weights that keep the
loss unbiased: torch only, distributed on ``torch.distributed`` through
:class:`~tamegrad.distributed.DistContext`.

* :class:`PrioritySampler`: draws each batch by per-example priority (latest loss or the
  cross-entropy gradient-norm proxy) with a uniform floor, importance weights (or the biased
  "pure" mode), and an optional pre-sample-and-score mode switched on by its estimated variance
  reduction.
* :class:`InfoBatchSampler`: loss-based pruning with rescaling (InfoBatch, ICLR 2024), epochs of
  varying length announced before they start.

Both yield this rank's ``(indices int64, weights float32)`` per step; the trainer computes the
per-example loss, minimises ``mean(weights * loss)`` and calls ``update(indices, losses)`` with
the unweighted per-example losses of its own slice (a collective). See docs/SAMPLING.md.
"""

from ._base import TableSampler, slice_for_rank
from ._draw import ce_grad_norm_proxy, tau_estimate
from .infobatch import InfoBatchSampler
from .priority import SCORES, PrioritySampler

__all__ = [
    "SCORES",
    "InfoBatchSampler",
    "PrioritySampler",
    "TableSampler",
    "ce_grad_norm_proxy",
    "slice_for_rank",
    "tau_estimate",
]
