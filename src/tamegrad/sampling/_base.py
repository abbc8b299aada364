"""What every table sampler shares: the per-example score table, the generator, the rank
slices, the all-gathered ``update``, the epoch position, the statistics, the state dict.

Distributed model (see :class:`~tamegrad.distributed.DistContext`): every rank holds the same
table and the same ``torch.Generator`` state, draws the same *global* batch and yields its own
contiguous slice (rank ``r`` of ``W`` gets entries ``[r*b/W, (r+1)*b/W)``). ``update`` is a
collective: each rank passes its local (index, score) pairs, the pairs are all-gathered, checked
on every rank, and every rank applies the same write, so the tables never diverge.

A rejected update writes nothing on any rank: each rank checks its own pairs and sends its
verdict in a header row with them (one ``all_gather`` of ``1 + b/W`` rows of (int32 index,
float32 loss bits); a rank passing more than ``b/W`` pairs costs a second, padded exchange);
every rank sees every verdict and raises the same ``ValueError`` before writing anything.
Hence ``update`` (and iterating) must be called the same number of times, in the same order, on
every rank.

Limits: the table lives on the CPU (a CUDA trainer passes CUDA tensors, which are copied: b
floats per step); with an nccl group the exchange runs on the current CUDA device. At most
2**31 - 1 examples (indices travel as int32). Duplicate indices within one update keep the
largest score.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor

from tamegrad.distributed import DistContext
from tamegrad.optim._validation import check_int_at_least

__all__ = ["TableSampler", "slice_for_rank"]

_MAX_N = 2**31 - 1
# verdict codes of a rank's local update check (0 = valid)
_PROBLEMS = {
    1: "indices and losses must be 1-D tensors of the same length",
    2: "indices must be an integer tensor",
    3: "indices out of range",
    4: "losses must be finite (no NaN or inf)",
    5: "losses must be >= 0",
}


def slice_for_rank(indices: Tensor, weights: Tensor, rank: int, world_size: int
                   ) -> tuple[Tensor, Tensor]:
    """Rank ``rank``'s contiguous share of a global batch (``torch.tensor_split``: sizes differ
    by at most one). When the sizes differ, the weights are multiplied by
    ``n_r * world_size / n`` so that the average over ranks of each rank's weighted *mean*
    (what DDP computes) equals the weighted mean of the global batch. Needs ``n >= world_size``.
    """
    n = indices.numel()
    if n < world_size:
        raise ValueError(f"a global batch of {n} cannot be split over {world_size} ranks")
    idx = torch.tensor_split(indices, world_size)[rank]
    w = torch.tensor_split(weights, world_size)[rank]
    if n % world_size:
        w = w * (idx.numel() * world_size / n)
    return idx, w


class TableSampler:
    """Base class; subclasses implement :meth:`_draw_global`, :meth:`batches_in_epoch` and may
    extend :meth:`_on_new_epoch`, :meth:`_after_update`, :meth:`_extra_state` /
    :meth:`_load_extra_state`, :meth:`_extra_stats`."""

    kind = "table"

    def __init__(self, num_samples: int, batch_size: int, *, seed: int,
                 dist_context: DistContext | None) -> None:
        n = check_int_at_least("num_samples", num_samples, 1)
        if n > _MAX_N:
            raise ValueError(f"Invalid num_samples: {n} (at most {_MAX_N})")
        self.num_samples = n
        self.batch_size = check_int_at_least("batch_size", batch_size, 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Invalid seed: {seed!r} (expected an int)")
        self.seed = seed
        self.dist = dist_context if dist_context is not None else DistContext.current()
        w = self.dist.world_size
        if self.batch_size % w:
            raise ValueError(
                f"Invalid batch_size: {batch_size} (the global batch must be a multiple of "
                f"world_size={w} so that every rank gets the same share)"
            )
        self._generator = torch.Generator().manual_seed(seed)
        self.scores = torch.zeros(n, dtype=torch.float32)
        self.seen = torch.zeros(n, dtype=torch.bool)
        self.epoch = 0
        self._position = 0
        self._scoring_s = 0.0
        self._reset_stats()

    # -- subclass hooks --------------------------------------------------------------------

    def _draw_global(self) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def batches_in_epoch(self, epoch: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_new_epoch(self) -> None:
        pass

    def _after_update(self, indices: Tensor, values: Tensor) -> None:
        pass

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _extra_stats(self) -> dict[str, Any]:
        return {}

    def _config(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "batch_size": self.batch_size}

    # -- setup check -----------------------------------------------------------------------

    def _check_ranks_agree(self) -> None:
        """One collective at construction: every rank must build the same sampler."""
        if not self.dist.enabled:
            return
        mine = {"kind": self.kind, "seed": self.seed, **self._config()}
        every = self.dist.all_gather_object(mine)
        for r, theirs in enumerate(every):
            if theirs != mine:
                raise ValueError(
                    f"sampler settings differ between ranks (rank {self.dist.rank}: {mine}, "
                    f"rank {r}: {theirs}); every rank needs the same settings and seed"
                )

    # -- epochs and iteration --------------------------------------------------------------

    def __len__(self) -> int:
        """Batches (optimizer steps) in the current epoch, the same on every rank."""
        return self.batches_in_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (resets the position and the epoch statistics). Calling it with
        the current epoch does nothing, so a run resumed mid-epoch from :meth:`state_dict`
        continues where it stopped."""
        e = check_int_at_least("epoch", epoch, 0)
        if e == self.epoch:
            return
        self.epoch = e
        self._position = 0
        self._reset_stats()
        self._on_new_epoch()

    @property
    def position(self) -> int:
        """Batches of the current epoch already drawn."""
        return self._position

    def epoch_progress(self) -> float:
        """Fractional epochs done: ``epoch + position / len(self)`` (what an lr schedule should
        be a function of when epochs differ in length)."""
        return self.epoch + self._position / max(1, len(self))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's ``(indices int64, weights float32)`` for the remaining batches of the
        current epoch."""
        while self._position < len(self):
            t0 = time.perf_counter()
            scoring_before = self._scoring_s
            idx, w = self._draw_global()
            self._position += 1
            self._record_batch(idx, w)
            local = slice_for_rank(idx, w.to(torch.float32), self.dist.rank,
                                   self.dist.world_size)
            elapsed = time.perf_counter() - t0 - (self._scoring_s - scoring_before)
            self._stat["bookkeeping_seconds"] += elapsed
            yield local

    # -- update ----------------------------------------------------------------------------

    def _comm_device(self) -> torch.device:
        if self.dist.enabled and tdist.get_backend(self.dist.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _check_local(self, indices: Tensor, losses: Tensor) -> tuple[int, str]:
        if indices.dim() != 1 or losses.dim() != 1 or indices.numel() != losses.numel():
            return 1, (f"indices shape {tuple(indices.shape)} and losses shape "
                       f"{tuple(losses.shape)}")
        if indices.dtype.is_floating_point or indices.dtype.is_complex or \
                indices.dtype == torch.bool:
            return 2, f"indices dtype {indices.dtype}"
        if indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.num_samples:
                return 3, f"indices span [{lo}, {hi}], outside [0, {self.num_samples})"
            if not bool(torch.isfinite(losses).all()):
                return 4, "losses contain NaN or inf"
            if bool((losses < 0).any()):
                return 5, f"losses contain a negative value ({float(losses.min())})"
        return 0, ""

    def update(self, indices: Tensor, losses: Tensor) -> None:
        """Record the latest per-example score (loss, or a gradient-norm proxy) of ``indices``.

        A collective under torch.distributed: pass this rank's local indices and their unweighted
        per-example scores; every rank receives every rank's pairs and writes them all. Any
        invalid pair on any rank raises ``ValueError`` on every rank and nothing is written.
        """
        t0 = time.perf_counter()
        try:
            idx = torch.as_tensor(indices).detach().to("cpu")
            val = torch.as_tensor(losses).detach().to("cpu", torch.float32)
            code, detail = self._check_local(idx, val)
            g_idx, g_val = self._exchange(idx, val, code, detail)
            self.scores.scatter_reduce_(0, g_idx, g_val, reduce="amax", include_self=False)
            self.seen[g_idx] = True
            self._after_update(g_idx, g_val)
            self._stat["updates"] += 1
        finally:
            self._stat["bookkeeping_seconds"] += time.perf_counter() - t0

    def _exchange(self, idx: Tensor, val: Tensor, code: int, detail: str
                  ) -> tuple[Tensor, Tensor]:
        if not self.dist.enabled:
            if code:
                raise ValueError(f"Invalid update: {_PROBLEMS[code]} ({detail}); nothing written")
            return idx.to(torch.int64), val
        dev = self._comm_device()
        world = self.dist.world_size
        cap = self.batch_size // world  # one rank's slice: one collective in the usual case
        n = idx.numel() if code == 0 else 0
        first = min(n, cap)
        buf = torch.zeros((1 + cap, 2), dtype=torch.int32)
        buf[0, 0], buf[0, 1] = n, code  # header row: pair count and verdict
        buf[1 : 1 + first, 0] = idx[:first].to(torch.int32)
        buf[1 : 1 + first, 1] = val[:first].view(torch.int32)
        gathered = self.dist.all_gather(buf.to(dev)).cpu()
        self._stat["bytes_sent"] += buf.numel() * 4
        self._stat["bytes_received"] += gathered.numel() * 4
        codes = gathered[:, 0, 1].tolist()
        bad = [r for r, c in enumerate(codes) if c]
        if bad:
            r = bad[0]
            mine = f"; here: {detail}" if self.dist.rank == r else ""
            raise ValueError(
                f"Invalid update on rank {r}: {_PROBLEMS[codes[r]]}{mine}; rejected on all "
                f"{world} ranks, nothing written"
            )
        sizes = gathered[:, 0, 0].tolist()
        parts = [gathered[r, 1 : 1 + min(sizes[r], cap)] for r in range(world)]
        extra = max(sizes) - cap
        if extra > 0:  # some rank passed more than its slice: a second, padded exchange
            over = torch.zeros((extra, 2), dtype=torch.int32)
            over[: n - first, 0] = idx[first:].to(torch.int32)
            over[: n - first, 1] = val[first:].view(torch.int32)
            more = self.dist.all_gather(over.to(dev)).cpu()
            self._stat["bytes_sent"] += over.numel() * 4
            self._stat["bytes_received"] += more.numel() * 4
            parts = [torch.cat([parts[r], more[r, : max(0, sizes[r] - cap)]])
                     for r in range(world)]
        rows = torch.cat(parts)
        return rows[:, 0].to(torch.int64), rows[:, 1].contiguous().view(torch.float32)

    # -- statistics ------------------------------------------------------------------------

    def _reset_stats(self) -> None:
        self._stat: dict[str, float] = {
            "steps": 0, "updates": 0, "weight_max": 0.0, "weight_sum": 0.0, "weight_count": 0,
            "bookkeeping_seconds": 0.0, "scoring_seconds": 0.0, "bytes_sent": 0,
            "bytes_received": 0,
        }
        self._epoch_seen = torch.zeros(self.num_samples, dtype=torch.bool)

    def _record_batch(self, idx: Tensor, w: Tensor) -> None:
        s = self._stat
        s["steps"] += 1
        if w.numel():
            s["weight_max"] = max(s["weight_max"], float(w.max()))
            s["weight_sum"] += float(w.sum())
            s["weight_count"] += w.numel()
        self._epoch_seen[idx] = True

    def stats(self) -> dict[str, Any]:
        """Statistics of the current epoch so far (reset by :meth:`set_epoch`).

        ``epoch``, ``steps`` (batches drawn), ``updates``; ``weight_max`` / ``weight_mean`` over
        the global batches drawn; ``distinct_examples`` drawn this epoch and
        ``distinct_fraction`` (of ``num_samples``); ``bookkeeping_seconds`` (this rank's time in
        draws and updates, including their collectives, excluding the scorer);
        ``scoring_seconds`` (time inside the pre-sample scorer, forward passes);
        ``bytes_sent`` / ``bytes_received`` (this rank's all-gather traffic for updates and
        scores) and their per-step averages; plus the subclass's own entries.
        """
        s = self._stat
        steps = max(1, int(s["steps"]))
        distinct = int(self._epoch_seen.sum())
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "steps": int(s["steps"]),
            "updates": int(s["updates"]),
            "weight_max": float(s["weight_max"]),
            "weight_mean": float(s["weight_sum"]) / max(1, int(s["weight_count"])),
            "distinct_examples": distinct,
            "distinct_fraction": distinct / self.num_samples,
            "bookkeeping_seconds": float(s["bookkeeping_seconds"]),
            "scoring_seconds": float(s["scoring_seconds"]),
            "bytes_sent": int(s["bytes_sent"]),
            "bytes_received": int(s["bytes_received"]),
            "bytes_sent_per_step": float(s["bytes_sent"]) / steps,
            "bytes_received_per_step": float(s["bytes_received"]) / steps,
        }
        out.update(self._extra_stats())
        return out

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the next batches depend on (table, generator, epoch, position) plus the
        epoch statistics; O(N) tensors. Identical on every rank."""
        return {
            "kind": self.kind,
            "config": {"seed": self.seed, **self._config()},
            "scores": self.scores.clone(),
            "seen": self.seen.clone(),
            "generator": self._generator.get_state(),
            "epoch": self.epoch,
            "position": self._position,
            "stats": dict(self._stat),
            "epoch_seen": self._epoch_seen.clone(),
            **self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; the sampler must have been built with the same
        ``num_samples`` and ``batch_size`` (``ValueError`` otherwise). The world size may differ
        (the global batches are the same, only the slices change)."""
        if state.get("kind") != self.kind:
            raise ValueError(f"Invalid state: kind {state.get('kind')!r}, expected {self.kind!r}")
        cfg = state["config"]
        for key in ("num_samples", "batch_size"):
            if cfg.get(key) != getattr(self, key):
                raise ValueError(
                    f"Invalid state: {key}={cfg.get(key)} but this sampler has "
                    f"{key}={getattr(self, key)}"
                )
        scores = torch.as_tensor(state["scores"], dtype=torch.float32)
        if scores.shape != (self.num_samples,) or not bool(torch.isfinite(scores).all()):
            raise ValueError("Invalid state: scores must be N finite values")
        self.scores = scores.clone()
        self.seen = torch.as_tensor(state["seen"], dtype=torch.bool).clone()
        self._generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._stat = dict(state["stats"])
        self._epoch_seen = torch.as_tensor(state["epoch_seen"], dtype=torch.bool).clone()
        self._load_extra_state(state)

