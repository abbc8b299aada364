"""A run's position and history, and what of it goes into a checkpoint and the summary.

:class:`RunState` holds the counters the loop advances (optimizer step, epoch position, the
metrics history, wall time). :meth:`RunState.checkpoint_parts` splits a checkpoint into the
entries every rank shares (written once, by rank 0) and this rank's own entries (its RNG, a
per-rank optimizer's state, per-rank named states); :func:`restore_states` puts named states
back. The runtime the trajectory depends on (torch's intra-op thread count changes float
rounding on CPU) is recorded as ``env`` and restored on resume.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import TrainConfig
from .extensions import Stateful, is_per_rank

logger = logging.getLogger("tamegrad.train")

__all__ = ["RunState", "restore_states", "summary_of"]


def _env() -> dict[str, Any]:
    return {"threads": torch.get_num_threads(), "torch": str(torch.__version__)}


def restore_env(env: dict[str, Any]) -> None:
    """Use the checkpointed run's intra-op thread count (results depend on it); warn when the
    torch version differs (its kernels may round differently)."""
    threads = env.get("threads")
    if isinstance(threads, int) and threads >= 1 and threads != torch.get_num_threads():
        logger.warning("resuming with %d intra-op threads as the checkpointed run used (not %d),"
                       " so that float rounding stays the same", threads, torch.get_num_threads())
        torch.set_num_threads(threads)
    version = env.get("torch")
    if version is not None and version != str(torch.__version__):
        logger.warning("the checkpoint was written with torch %s, this is %s: the resumed run "
                       "may differ from an uninterrupted one in the last bits", version,
                       torch.__version__)


def restore_states(states: dict[str, Stateful], saved: dict[str, Any]) -> None:
    """Load every named state from ``saved``; a state the checkpoint lacks is an error."""
    missing = sorted(set(states) - set(saved))
    if missing:
        raise KeyError(f"the checkpoint has no state for {', '.join(missing)}")
    for name, obj in states.items():
        obj.load_state_dict(saved[name])


@dataclass
class RunState:
    """Counters and history of a run; restored from a checkpoint on resume."""

    global_step: int = 0
    start_epoch: int = 0
    start_batch: int = 0
    wall_offset: float = 0.0
    epoch_time_before: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    session_start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Training seconds over all sessions of the run so far."""
        return self.wall_offset + (time.perf_counter() - self.session_start)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Counters, history and RNG from a checkpoint (after the states were loaded)."""
        rng = ckpt.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        cuda_states = rng.get("cuda") or []
        if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        restore_env(ckpt.get("env") or {})
        self.start_epoch = int(ckpt["epoch"])
        self.start_batch = int(ckpt["batch_in_epoch"])
        self.global_step = int(ckpt["global_step"])
        self.history = list(ckpt["metrics"])
        self.wall_offset = float(ckpt.get("wall_time", 0.0))
        self.epoch_time_before = float(ckpt["running"]["epoch_time"])

    def checkpoint_parts(
        self, epoch: int, batch_in_epoch: int, epoch_time: float, config: TrainConfig,
        model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
        running: Stateful, states: dict[str, Stateful],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(shared, own)`` checkpoint entries (see the module docstring)."""
        shared: dict[str, Any] = {
            "model": model.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "global_step": self.global_step,
            "running": {**running.state_dict(), "epoch_time": epoch_time},
            "metrics": list(self.history),
            "wall_time": self.elapsed(),
            "config": config.to_dict(),
            "env": _env(),
            "states": {k: v.state_dict() for k, v in states.items() if not is_per_rank(v)},
        }
        own: dict[str, Any] = {
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }
        per_rank_states = {k: v.state_dict() for k, v in states.items() if is_per_rank(v)}
        if per_rank_states:
            own["states"] = per_rank_states
        (own if is_per_rank(optimizer) else shared)["optimizer"] = optimizer.state_dict()
        return shared, own


def summary_of(state: RunState, status: str, error: str | None = None) -> dict[str, Any]:
    """The ``summary.json`` dict of a run in ``state`` with ``status``."""
    history = state.history
    last = history[-1] if history else {}
    accs = [r["test_acc"] for r in history]
    summary: dict[str, Any] = {
        "status": status,
        "final_test_acc": last.get("test_acc"),
        "best_test_acc": max(accs) if accs else None,
        "best_epoch": (accs.index(max(accs)) + 1) if accs else None,
        "final_test_loss": last.get("test_loss"),
        "final_train_loss": last.get("train_loss"),
        "final_train_acc": last.get("train_acc"),
        "wall_time": last.get("wall_time", state.wall_offset),
        "epochs": len(history),
        "steps": state.global_step,
    }
    if "test_bpc" in last:
        summary["final_test_bpc"] = last["test_bpc"]
    if error is not None:
        summary["error"] = error
    return summary
