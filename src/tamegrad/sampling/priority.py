"""``PrioritySampler``: draw each batch by per-example priority, with unbiased importance weights.

Table mode (default). The sampler keeps every example's latest score ``s_i`` (the loss, or the
gradient-norm proxy :func:`~tamegrad.sampling.ce_grad_norm_proxy`), refreshed by
:meth:`~TableSampler.update` after each step; an example never scored counts as the current
maximum, so every example gets visited early. Each batch is drawn from::

    q_i = s_i ** power,     p_i = (1 - eps) * q_i / sum(q) + eps / N

with replacement (weight ``1 / (N p_i)``) or without (randomized systematic sampling with
inclusion probabilities ``pi_i = min(1, c p_i)``, weight ``b / (N pi_i)``); see ``_draw.py``.
Either way ``mean(w * loss)`` over the batch is an unbiased estimate of the full-data mean loss
for the current table, and ``w <= 1 / eps``. ``unbiased=False`` returns weights of 1 (biased
"pure prioritisation", towards high scores). ``eps=1`` is uniform sampling with weights 1.

Pre-sample mode (``presample=k``, Katharopoulos & Fleuret 2018): each step draws ``B = k * b``
uniform candidates, has them scored by a forward-only ``scorer`` (:meth:`set_scorer`), and
draws ``b`` of them by their fresh scores (same floor and weights, with ``B`` for ``N``). It is
only worth its ``B`` extra forward passes when the scores are uneven enough, so it runs only
while the EMA of ``tau = sqrt(mean(q^2)) / mean(q)`` (the spec's
``1/sqrt(1 - ||g-u||^2/||g||^2)``) is at least ``tau_threshold`` (default ``(B + 3b) / (3b)``:
a backward pass costs about two forward passes). Otherwise the step is a uniform batch
(weights 1) whose losses, passed to ``update``, refresh the tau estimate. The candidates'
scores are also written into the table.

What it cannot do: the table's scores are stale (an example's priority is its loss when last
seen, so the weights are exact for the table, not for the current model); sampling with
replacement puts duplicates in a batch; the draw costs O(N) per step (vectorised: about 0.2 ms
at N = 50,000, see docs/SAMPLING.md), updates O(b); a scorer that depends on the model must be
run identically on every rank (the sampler calls it on the local slice of the candidates).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from tamegrad.distributed import DistContext
from tamegrad.optim._validation import (
    check_flag,
    check_int_at_least,
    check_nonnegative,
    check_unit_interval,
)

from ._base import TableSampler
from ._draw import (
    ce_grad_norm_proxy,
    draw_systematic,
    draw_with_replacement,
    floor_mix,
    inclusion_probabilities,
    tau_estimate,
)

__all__ = ["SCORES", "PrioritySampler"]

#: What the table's scores are: the per-example loss, or the CE gradient-norm proxy.
SCORES = ("loss", "grad_norm")

Scorer = Callable[[Tensor], Tensor]


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ValueError(f"Invalid eps: {eps!r} (expected a number in (0, 1])")
    v = float(eps)
    if not (0.0 < v <= 1.0):  # also rejects NaN
        raise ValueError(f"Invalid eps: {eps} (must be in (0, 1]: the uniform floor mix)")
    return v


class PrioritySampler(TableSampler):
    """Yields ``(indices, weights)`` (this rank's slice of the global batch) by priority.

    Args:
        num_samples: examples in the data set (N >= 1).
        batch_size: the *global* batch b (a multiple of the world size; rank r gets b / W).
        eps: uniform floor mix in (0, 1]; every weight is <= 1 / eps. Default 0.1.
        power: exponent on the scores (0 = uniform, 1 = proportional; a temperature T is
            ``power = 1 / T``). Default 1.
        unbiased: importance weights (True) or weights of 1 (biased pure prioritisation).
        replacement: draw with replacement (default) or b distinct examples per batch
            (``batch_size <= num_samples`` then).
        score: ``"loss"`` or ``"grad_norm"``: what :meth:`score_batch` hands to ``update``.
        steps_per_epoch: batches per epoch; default ``ceil(N / b)``.
        presample: k >= 2 turns on the pre-sample-and-score mode with ``B = k * b`` candidates.
        tau_threshold: pre-sample runs while the tau EMA is >= this; default ``(B + 3b)/(3b)``.
        tau_momentum: EMA factor of tau in [0, 1). Default 0.9.
        seed: the generator's seed (the same on every rank).
        dist_context: the process group; default ``DistContext.current()``.
    """

    kind = "priority"

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        eps: float = 0.1,
        power: float = 1.0,
        unbiased: bool = True,
        replacement: bool = True,
        score: str = "loss",
        steps_per_epoch: int | None = None,
        presample: int | None = None,
        tau_threshold: float | None = None,
        tau_momentum: float = 0.9,
        seed: int = 0,
        dist_context: DistContext | None = None,
    ) -> None:
        super().__init__(num_samples, batch_size, seed=seed, dist_context=dist_context)
        self.eps = _check_eps(eps)
        self.power = check_nonnegative("power", power)
        check_flag("unbiased", unbiased)
        check_flag("replacement", replacement)
        self.unbiased, self.replacement = unbiased, replacement
        if score not in SCORES:
            raise ValueError(f"Invalid score: {score!r} (one of {', '.join(SCORES)})")
        self.score = score
        n, b = self.num_samples, self.batch_size
        if not replacement and b > n:
            raise ValueError(
                f"Invalid batch_size: {b} > num_samples={n} without replacement"
            )
        if steps_per_epoch is None:
            steps_per_epoch = math.ceil(n / b)
        self.steps_per_epoch = check_int_at_least("steps_per_epoch", steps_per_epoch, 1)
        if presample is not None:
            check_int_at_least("presample", presample, 2)
            if not replacement and presample * b > n:
                raise ValueError(
                    f"Invalid presample: {presample} * batch_size {b} > num_samples={n} "
                    "without replacement"
                )
            if tau_threshold is None:
                tau_threshold = (presample * b + 3 * b) / (3 * b)
        self.presample = presample
        self.tau_threshold = check_nonnegative(
            "tau_threshold", 0.0 if tau_threshold is None else tau_threshold
        )
        self.tau_momentum = check_unit_interval("tau_momentum", tau_momentum)
        self._scorer: Scorer | None = None
        self._tau_ema = 0.0
        self._tau_pending = False
        self._reset_counts()
        self._check_ranks_agree()

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(), "eps": self.eps, "power": self.power, "unbiased": self.unbiased,
            "replacement": self.replacement, "score": self.score,
            "steps_per_epoch": self.steps_per_epoch, "presample": self.presample,
            "tau_threshold": self.tau_threshold, "tau_momentum": self.tau_momentum,
        }

    # -- public helpers --------------------------------------------------------------------

    def batches_in_epoch(self, epoch: int) -> int:
        """Batches per epoch: ``steps_per_epoch`` for every epoch."""
        check_int_at_least("epoch", epoch, 0)
        return self.steps_per_epoch

    def total_steps(self, epochs: int) -> int:
        """Optimizer steps in ``epochs`` epochs."""
        return check_int_at_least("epochs", epochs, 0) * self.steps_per_epoch

    def set_scorer(self, scorer: Scorer | None) -> None:
        """Pre-sample mode: ``scorer(local_indices) -> scores`` (one finite score >= 0 per index,
        a forward pass without gradients). Every rank must set one."""
        self._scorer = scorer

    def score_batch(self, losses: Tensor, logits: Tensor | None = None,
                    targets: Tensor | None = None) -> Tensor:
        """The per-example scores to pass to :meth:`update`: the detached losses, or (with
        ``score="grad_norm"``) :func:`ce_grad_norm_proxy` of ``logits`` and ``targets``."""
        if self.score == "loss":
            return losses.detach()
        if logits is None or targets is None:
            raise ValueError("score='grad_norm' needs logits and targets")
        return ce_grad_norm_proxy(logits, targets)

    def probabilities(self) -> Tensor:
        """The table's current sampling distribution ``p`` (float64, sums to 1)."""
        s = self.scores
        if not bool(self.seen.all()):
            # unseen scores are 0 and losses are >= 0, so the max is the max over seen examples
            s = torch.where(self.seen, s, s.max())
        q = s.to(torch.float64)
        if self.power != 1.0:
            q = q.pow(self.power)
        return floor_mix(q, self.eps)

    # -- drawing ---------------------------------------------------------------------------

    def _pick(self, p: Tensor, k: int) -> tuple[Tensor, Tensor]:
        n = p.numel()
        if self.replacement:
            idx = draw_with_replacement(p, k, self._generator)
            w = (p[idx] * n).reciprocal_()
        else:
            pi = inclusion_probabilities(p, k)
            idx = draw_systematic(pi, k, self._generator)
            w = (pi[idx] * (n / k)).reciprocal_()
        if not self.unbiased:
            w = torch.ones_like(w)
        return idx, w.to(torch.float32)

    def _uniform(self, k: int) -> Tensor:
        if self.replacement:
            return torch.randint(self.num_samples, (k,), generator=self._generator)
        return torch.randperm(self.num_samples, generator=self._generator)[:k]

    def _draw_global(self) -> tuple[Tensor, Tensor]:
        if self.presample is None:
            return self._pick(self.probabilities(), self.batch_size)
        if self._tau_ema < self.tau_threshold:
            self._tau_pending = True
            idx = self._uniform(self.batch_size)
            return idx, torch.ones(idx.numel(), dtype=torch.float32)
        return self._draw_presampled(self.presample * self.batch_size)

    def _draw_presampled(self, big_b: int) -> tuple[Tensor, Tensor]:
        if self._scorer is None:
            raise RuntimeError("presample mode needs a scorer: call set_scorer(fn) on every rank")
        cand = self._uniform(big_b)
        w_size = self.dist.world_size
        local = torch.tensor_split(cand, w_size)[self.dist.rank]
        t0 = time.perf_counter()
        out = torch.as_tensor(self._scorer(local)).detach().to("cpu", torch.float32).flatten()
        spent = time.perf_counter() - t0
        self._scoring_s += spent
        self._stat["scoring_seconds"] += spent
        if out.numel() != local.numel():  # poison instead of raising alone: all ranks reject
            out = torch.full((local.numel(),), math.nan)
        scores = self.dist.all_gather(out.to(self._comm_device())).cpu().flatten()
        if self.dist.enabled:
            self._stat["bytes_sent"] += out.numel() * 4
            self._stat["bytes_received"] += scores.numel() * 4
        if not bool(torch.isfinite(scores).all()) or bool((scores < 0).any()):
            raise ValueError(
                "Invalid scorer output: every rank's scorer must return one finite score >= 0 "
                "per candidate; nothing written"
            )
        self.scores.scatter_reduce_(0, cand, scores, reduce="amax", include_self=False)
        self.seen[cand] = True
        q = scores.to(torch.float64)
        if self.power != 1.0:
            q = q.pow(self.power)
        self._push_tau(tau_estimate(q))
        pos, w = self._pick(floor_mix(q, self.eps), self.batch_size)
        self._counts["presampled_steps"] += 1
        return cand[pos], w

    def _push_tau(self, tau: float) -> None:
        a = self.tau_momentum
        self._tau_ema = a * self._tau_ema + (1.0 - a) * tau

    def _after_update(self, indices: Tensor, values: Tensor) -> None:
        if self._tau_pending and values.numel():
            q = values.to(torch.float64)
            self._push_tau(tau_estimate(q.pow(self.power) if self.power != 1.0 else q))
            self._tau_pending = False

    # -- stats and state -------------------------------------------------------------------

    def _reset_counts(self) -> None:
        self._counts = {"presampled_steps": 0}

    def _on_new_epoch(self) -> None:
        self._reset_counts()

    def _extra_stats(self) -> dict[str, Any]:
        """``tau`` (EMA, pre-sample mode), ``presampled_steps`` (steps that used importance
        sampling over candidates), ``table_tau`` (tau of the table's distribution: how much
        the table's prioritisation could reduce the variance)."""
        p = self.probabilities()
        return {
            "tau": self._tau_ema,
            "presampled_steps": self._counts["presampled_steps"],
            "table_tau": math.sqrt(p.numel() * float(p.square().sum())),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"tau_ema": self._tau_ema, "tau_pending": self._tau_pending,
                "counts": dict(self._counts)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._tau_ema = float(state["tau_ema"])
        self._tau_pending = bool(state["tau_pending"])
        self._counts = dict(state["counts"])
