"""Vectorised draws by priority, their importance weights, and the scores that feed them.

Every function works on a whole table with a handful of torch ops (no Python loop over
examples): a draw costs O(n) for the normalisation and cumulative sum plus O(k log n) for the
binary searches, with ``n`` the population (data set or candidate pool) and ``k`` the batch.

Two designs, both exactly unbiased for the population mean ``(1/n) sum_i f_i``:

* with replacement: ``k`` i.i.d. draws from ``p``; the weight of a drawn ``i`` is
  ``1 / (n p_i)``, so ``E[(1/k) sum_j w_j f_j] = (1/n) sum_i f_i``.
* without replacement (randomized systematic PPS, Madow 1949): inclusion probabilities
  ``pi_i = min(1, c p_i)`` with ``sum pi = k`` (``c`` by iterative capping), the population in a
  fresh random order, one uniform start ``u`` and the points ``u, u+1, ..., u+k-1`` on the
  cumulative ``pi``: exactly ``k`` distinct examples, each included with probability ``pi_i``.
  The Horvitz-Thompson weight is ``k / (n pi_i)``.

With the floor ``p_i >= eps / n`` both weights are at most ``1 / eps`` (without replacement
``pi_i >= min(1, k p_i)``, and ``k / n <= 1``).

Limits: probabilities are float64 (a float32 cumulative sum over millions of entries would
lose the smallest entries); the order permutation of the systematic design costs a
``randperm(n)`` per draw; systematic sampling has joint inclusion probabilities that depend on
that order, so second-order (variance) estimates of it are not provided.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ce_grad_norm_proxy",
    "draw_systematic",
    "draw_with_replacement",
    "floor_mix",
    "inclusion_probabilities",
    "tau_estimate",
]


def floor_mix(priorities: Tensor, eps: float) -> Tensor:
    """``p = (1 - eps) * q / sum(q) + eps / n`` in float64 (uniform when ``sum(q) == 0``)."""
    q = priorities.to(torch.float64)
    n = q.numel()
    total = float(q.sum())
    if not total > 0.0 or not math.isfinite(total):
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    return q.mul((1.0 - eps) / total).add_(eps / n)


def draw_with_replacement(p: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` i.i.d. indices from the probability vector ``p`` (int64)."""
    cdf = torch.cumsum(p, 0)
    u = torch.rand(k, generator=generator, dtype=torch.float64).mul_(cdf[-1])
    return torch.searchsorted(cdf, u, right=True).clamp_(max=p.numel() - 1)


def inclusion_probabilities(p: Tensor, k: int) -> Tensor:
    """``pi_i = min(1, c p_i)`` with ``sum(pi) = k`` (``p`` positive, ``k <= n``)."""
    n = p.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.float64)
    pi = p * (k / float(p.sum()))
    capped = torch.zeros(n, dtype=torch.bool)
    # each round caps at least one more entry, so this ends after at most k rounds (usually 1)
    while True:
        over = (pi >= 1.0) & ~capped
        if not bool(over.any()):
            return pi.clamp_(max=1.0)
        capped |= over
        free = ~capped
        rest = k - int(capped.sum())
        pi = torch.where(capped, torch.ones_like(pi), p * (rest / float(p[free].sum())))


def draw_systematic(pi: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` distinct indices, index ``i`` included with probability ``pi_i`` (``sum pi = k``)."""
    n = pi.numel()
    order = torch.randperm(n, generator=generator)
    cum = torch.cumsum(pi[order], 0)
    start = torch.rand(1, generator=generator, dtype=torch.float64)
    points = torch.arange(k, dtype=torch.float64).add_(start).mul_(float(cum[-1]) / k)
    pos = torch.searchsorted(cum, points, right=True).clamp_(max=n - 1)
    return order[pos]


def tau_estimate(scores: Tensor) -> float:
    """Katharopoulos & Fleuret's variance-reduction estimate for sampling ``proportional to
    scores`` among these ``n`` examples: ``1 / sqrt(1 - ||g - u||^2 / ||g||^2)`` with ``g`` the
    normalised scores and ``u`` uniform, which simplifies to ``sqrt(n * sum g^2)``
    (= ``sqrt(mean(s^2)) / mean(s)``; 1 for equal scores, ``sqrt(n)`` for a single non-zero
    one). Returns 1.0 when every score is 0."""
    s = scores.to(torch.float64)
    total = float(s.sum())
    if not total > 0.0:
        return 1.0
    g = s / total
    return math.sqrt(s.numel() * float(g.square().sum()))


def ce_grad_norm_proxy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-example ``||softmax(z) - onehot(y)||_2``: the exact norm of the gradient of the
    (unreduced) cross-entropy w.r.t. the logits ``z``, a cheap proxy for the per-example
    gradient norm (Katharopoulos & Fleuret 2018 use it as an upper-bound surrogate).

    ``logits`` has shape ``(..., C)`` and ``targets`` the leading shape ``(...)`` (int64 class
    indices); returns float32 of shape ``(...)``, detached. It ignores label smoothing, class
    weights and ``ignore_index``: with those, the gradient is a different vector.
    """
    if logits.dim() < 1 or targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"Invalid targets: shape {tuple(targets.shape)} does not match logits "
            f"{tuple(logits.shape)} without the class dimension"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"Invalid targets: dtype {targets.dtype} (expected integer classes)")
    c = logits.shape[-1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= c):
        raise ValueError(f"Invalid targets: class indices must be in [0, {c})")
    with torch.no_grad():
        d = torch.softmax(logits.detach().float(), dim=-1)
        d.scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(d[..., :1], -1.0))
        return d.norm(dim=-1)
