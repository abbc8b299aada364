"""Training metrics without per-step host syncs, the NaN/inf guard, and evaluation.

* :class:`RunningMetrics`: per micro-batch the loop only stores the detached loss, logits and
  targets; every ``FLUSH_EVERY`` micro-batches (and before a checkpoint and at the epoch end)
  they are folded into running sums with a handful of batched ops, at fixed positions, so the
  float summation order never depends on timing or resumption. ``train_loss``/``train_acc`` are
  averages over the epoch's micro-batches weighted by samples (tokens for text).
* The NaN/inf check reads every micro-batch's loss on a single CPU process (free there, and the
  bad step is never applied); on CUDA and under DDP it runs at the fold points (all ranks agree
  through an all-reduce), so the bad step may already have been applied, but is never
  checkpointed.
* :func:`evaluate`: loss and accuracy over this rank's share of the test split, summed over the
  ranks.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import DistContext

__all__ = ["FLUSH_EVERY", "NonFiniteLossError", "RunningMetrics", "evaluate"]

FLUSH_EVERY = 32  # micro-batches between folds of the pending metrics (and NaN checks off CPU)
LN2 = math.log(2.0)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stopped before using it.

    ``epoch`` is 1-based, ``step`` is the optimizer step (1-based) the loss belonged to,
    ``value`` the loss. No checkpoint is written after the bad loss.
    """

    def __init__(self, epoch: int, step: int, value: float, detail: str = "") -> None:
        self.epoch, self.step, self.value = epoch, step, value
        msg = f"Non-finite training loss {value} in epoch {epoch} at optimizer step {step}"
        if detail:
            msg += f" ({detail})"
        msg += (
            "; training stopped, the last checkpoint is the last good state. "
            "Lower the learning rate or enable clip_grad_norm."
        )
        super().__init__(msg)


class RunningMetrics:
    """The epoch's running training loss/accuracy sums, folded at fixed positions."""

    def __init__(self, device: torch.device, dist: DistContext) -> None:
        self.device, self.dist = device, dist
        self.check_each = device.type == "cpu" and not dist.enabled  # .item() is free there
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0
        self._losses: list[Tensor] = []
        self._logits: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._sizes: list[int] = []
        self._steps: list[int] = []

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()
        self.count = 0
        self._clear()

    def _clear(self) -> None:
        for pending in (self._losses, self._logits, self._targets, self._sizes, self._steps):
            pending.clear()

    def check(self, loss: Tensor, epoch: int, step: int) -> None:
        """Single CPU process only: raise before the backward pass of a non-finite loss."""
        if self.check_each:
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLossError(epoch + 1, step, value)

    def add(self, loss: Tensor, logits: Tensor, y: Tensor, step: int) -> None:
        self._losses.append(loss.detach())
        self._logits.append(logits.detach())
        self._targets.append(y)
        self._sizes.append(y.numel())
        self._steps.append(step)

    def flush(self, epoch: int, global_step: int) -> None:
        """Fold the pending micro-batch results into the sums and check them for NaN/inf.

        Under DDP every rank calls this at the same positions (it all-reduces the check).
        """
        if not self._losses:
            if self.dist.enabled:  # still take part in the collective
                self._check_pending(epoch, global_step, None)
            return
        losses = torch.stack(self._losses).detach().double()
        self._check_pending(epoch, global_step, losses)
        weights = torch.tensor(self._sizes, dtype=torch.float64).to(self.device)
        with torch.no_grad():
            self.loss_sum += (losses * weights).sum()
            pred = torch.cat(self._logits).argmax(-1)
            self.correct += (pred == torch.cat(self._targets)).sum()
        self.count += sum(self._sizes)
        self._clear()

    def _check_pending(self, epoch: int, global_step: int, losses: Tensor | None) -> None:
        if self.check_each:
            return  # already checked at every micro-batch
        bad = (
            torch.zeros((), dtype=torch.int32, device=self.device)
            if losses is None
            else (~torch.isfinite(losses)).any().to(torch.int32)
        )
        self.dist.all_reduce_(bad, "max")
        if not bool(bad.item()):
            return
        if losses is not None and not bool(torch.isfinite(losses).all()):
            i = int((~torch.isfinite(losses)).nonzero()[0, 0])
            raise NonFiniteLossError(
                epoch + 1, self._steps[i], float(losses[i]),
                "detected at the next metrics sync, after that step was applied",
            )
        raise NonFiniteLossError(
            epoch + 1, global_step, float("nan"), "on another rank; detected at a sync"
        )

    def progress(self) -> dict[str, str]:
        """Running loss/accuracy for a progress bar (reads two values to the host)."""
        count = max(self.count, 1)
        return {"loss": f"{self.loss_sum.item() / count:.4f}",
                "acc": f"{self.correct.item() / count:.4f}"}

    def epoch_totals(self) -> tuple[float, float]:
        """``(train_loss, train_acc)`` of the epoch over all ranks (all-reduce)."""
        totals = torch.stack([
            self.loss_sum, self.correct.double(),
            torch.tensor(float(self.count), dtype=torch.float64, device=self.device),
        ])
        loss_sum, corr, cnt = self.dist.all_reduce_(totals).tolist()
        return loss_sum / cnt, corr / cnt

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum.detach().cpu().clone(),
                "correct": self.correct.detach().cpu().clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum.copy_(state["loss_sum"])
        self.correct.copy_(state["correct"])
        self.count = int(state["count"])


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Any, device: torch.device, dist: DistContext,
    autocast: AbstractContextManager[Any],
) -> tuple[float, float]:
    """``(loss, accuracy)`` of ``model`` in eval mode over ``batches`` of ``(x, y)``, summed
    over all ranks (each rank passes its share of the test split)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for x, y in batches:
        with autocast:
            logits = model(x)
        flat = logits.reshape(-1, logits.shape[-1]).float()
        loss_sum += F.cross_entropy(flat, y.reshape(-1), reduction="sum").double()
        correct += (logits.argmax(-1) == y).sum()
        count += y.numel()
    model.train(was_training)
    totals = torch.stack([loss_sum, correct.double(),
                          torch.tensor(float(count), dtype=torch.float64, device=device)])
    loss, corr, cnt = dist.all_reduce_(totals).tolist()
    return loss / max(cnt, 1.0), corr / max(cnt, 1.0)
