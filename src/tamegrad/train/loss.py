"""The training loss, computed per example and reduced in one place.

``training_loss(logits, y, weight, per_example=...)`` returns the scalar to back-propagate and,
when asked, the per-example losses (for classification the example's cross-entropy, for text
the mean over its tokens). Reduction: the mean over examples, each example's loss multiplied by
its weight when ``weight`` is given (a sampler's importance weights, so that the weighted mean is
an unbiased estimate of the data set's mean loss).

When neither weights nor per-example values are needed, the loss is torch's fused mean
cross-entropy over all targets: same value up to float rounding, and bit-identical to runs made
before per-example losses existed (the fused kernel sums in another order than
``losses.mean()``, so the two paths are not bitwise interchangeable).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["training_loss"]


def training_loss(
    logits: Tensor, y: Tensor, weight: Tensor | None = None, *, per_example: bool = False
) -> tuple[Tensor, Tensor | None]:
    """``(loss, per_example_losses or None)`` for logits ``(B, C)`` / ``(B, T, C)``."""
    flat_logits = logits if logits.ndim == 2 else logits.flatten(0, -2)
    flat_y = y if y.ndim == 1 else y.flatten()
    if weight is None and not per_example:
        return F.cross_entropy(flat_logits, flat_y), None
    losses = F.cross_entropy(flat_logits, flat_y, reduction="none")
    if logits.ndim > 2:
        losses = losses.view(y.shape[0], -1).mean(dim=1)
    loss = (losses * weight.to(losses.dtype)).mean() if weight is not None else losses.mean()
    return loss, losses.detach() if per_example else None
