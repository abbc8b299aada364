"""Row selection for column-row sampling (CRS) and WTA-CRS: the sampler math, no autograd.

Given nonnegative row scores ``s`` (``n`` rows) and a budget of ``k`` rows, :func:`select_rows`
returns row indices and weights such that, for any rows ``a_i`` whose contribution is zero
wherever ``s_i == 0``,

    E[ sum_j weights_j * a_{idx_j} ] = sum_i a_i          (unbiased)

Probabilities are ``p_i = s_i / sum(s)``.

* ``"wtacrs"``: winners ``C`` = the ``|C|`` rows of largest ``p``, kept exactly (weight 1);
  the other ``b = k - |C|`` rows are drawn i.i.d. *with replacement* from the rows outside
  ``C`` with probability ``p_j / R`` where ``R = sum_{j not in C} p_j``; a drawn row ``j``
  weighs ``R / (b p_j)`` per draw. ``|C|`` minimises ``(1 - P_C) / (k - |C|)`` over
  ``0 <= |C| <= k - 1``; ``|C| = 0`` (plain CRS) unless some ``|C| >= 1`` is strictly below
  ``1 / k``. ``|C| <= k - 1`` always leaves at least one draw for the rest, so the estimator
  stays unbiased when the winners hold almost all of the mass (the public code drops the rest
  there). ``R`` is summed over the rest directly, not computed as ``1 - P_C``, so it does not
  cancel to 0 when ``P_C`` rounds to 1.
* ``"crs"``: ``|C| = 0``: ``k`` draws with replacement, weight ``1 / (k p_j)`` per draw.
* ``"topk"``: the ``k`` rows of largest score, weight 1: deterministic and BIASED (an ablation).

Repeated draws of a row are merged (one index, the summed weight), so at most ``k`` distinct
rows are returned. When at most ``k`` rows have a positive score every one of them is returned
with weight 1 (exact). Randomness: ``torch.multinomial`` on the default generator of the
scores' device (so restoring torch's RNG state replays the draws). Computed in float64.
Limits: ``torch.multinomial`` takes at most 2**24 categories (rows) per call.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Mode = Literal["wtacrs", "crs", "topk"]
MODES: tuple[str, ...] = ("wtacrs", "crs", "topk")


def winner_count(sorted_probs: Tensor, k: int) -> int:
    """The adaptive ``|C|``: ``argmin_{0 <= c <= k-1} (1 - P_c) / (k - c)``.

    ``sorted_probs``: the ``k`` (or more) largest probabilities, descending, summing with the
    rest to 1. ``c = 0`` scores ``1 / k``; a ``c >= 1`` is chosen only when strictly smaller
    (ties and flat mass keep plain CRS). Returns a Python int in ``[0, k - 1]``.
    """
    if k <= 1:
        return 0
    top = sorted_probs[: k - 1].to(torch.float64)
    # residual mass after the c largest: clamp the rounding of 1 - P_c at 0
    residual = (1.0 - torch.cumsum(top, 0)).clamp_min(0.0)
    c = torch.arange(1, k, device=top.device, dtype=torch.float64)
    score = residual / (k - c)
    best = int(torch.argmin(score).item())
    if float(score[best].item()) < 1.0 / k:
        return best + 1
    return 0


def select_rows(scores: Tensor, k: int, mode: Mode = "wtacrs") -> tuple[Tensor, Tensor, int]:
    """Choose rows for a ``k``-row estimate of ``sum_i a_i`` (see the module doc).

    ``scores``: 1-D, finite, ``>= 0``; rows with score 0 must contribute 0 (the caller gives
    every row with a nonzero input a positive score). Returns ``(idx, weights, n_winners)``:
    int64 indices of distinct rows (winners first), float64 weights and ``|C|``.
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    if mode not in MODES:
        raise ValueError(f"Invalid mode: {mode!r} (expected one of {', '.join(MODES)})")
    n = scores.numel()
    if k < 1:
        raise ValueError(f"Invalid k: {k} (must be >= 1)")
    s = scores.to(torch.float64)
    positive = torch.nonzero(s > 0).flatten()
    if positive.numel() <= k:  # every contributing row fits: exact
        return positive, torch.ones(positive.numel(), dtype=torch.float64, device=s.device), int(
            positive.numel()
        )
    if mode == "topk":
        idx = torch.topk(s, k).indices
        return idx, torch.ones(k, dtype=torch.float64, device=s.device), k
    p = s / s.sum()
    if mode == "wtacrs":
        top = torch.topk(p, min(k, n))
        c = winner_count(top.values, k)
        winners = top.indices[:c]
    else:
        c = 0
        winners = torch.empty(0, dtype=torch.int64, device=s.device)
    rest = p.clone()
    rest[winners] = 0.0
    mass = rest.sum()  # R, summed directly (no 1 - P_C cancellation)
    draws = k - c
    drawn = torch.multinomial(rest / mass, draws, replacement=True)
    uniq, counts = torch.unique(drawn, return_counts=True)
    w = counts.to(torch.float64) * mass / (draws * p[uniq])
    idx = torch.cat([winners, uniq])
    weights = torch.cat([torch.ones(c, dtype=torch.float64, device=s.device), w])
    return idx, weights, c
