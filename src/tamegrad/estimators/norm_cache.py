"""The gradient-norm cache of WTA-CRS: output-gradient row norms from each example's last visit.

WTA-CRS must pick the rows (tokens) it keeps during the forward pass, but its sampling
probabilities ``p_i ~ ||h_i|| * ||dz_i||`` need the output-gradient norms ``||dz_i||``, which
only backward knows. As in the paper's code, each converted layer remembers the norms it saw
the last time an example was in a batch (the previous epoch) and uses them on the next visit.

Where it lives and what it costs: one table per layer, on the CPU, in bfloat16 (2 bytes per
entry), of shape ``(examples, positions)``: ``examples`` grows to the largest example index
seen + 1 (pre-size it with :meth:`GradNormCache.reserve`), ``positions`` to the longest
sequence seen. NaN marks "not seen yet". Bytes = ``2 * examples * positions * layers``, e.g.
7,843 Tiny Shakespeare windows x 128 characters x 12 layers = 24 MB. The layers report their
share through the memory meter's ``estimator_extra_bytes()`` protocol (as ``extra_bytes``);
:meth:`GradNormCache.nbytes` gives the total (allocated capacity included).

What is stored: a batch's norms divided by their mean over that batch's rows, so the loss
scale (gradient accumulation, a ``GradScaler``) does not skew rows cached at different steps.
A batch whose gradient norms are not all finite (a skipped fp16 step) is not recorded.

Checkpointing: :meth:`state_dict` / :meth:`load_state_dict` (tables trimmed to their logical
size); the trainer saves it as a named state next to the model and optimizer, so ``--resume``
continues with the same cache and (with torch's RNG state restored) the same draws.

DDP: each rank records its own batches immediately and also queues them while a process group
with more than one process is initialised; :meth:`sync` (call it after every backward, or
after the last micro-batch of an accumulation) all-gathers the queued ``(layer, examples,
norms)`` and applies every rank's updates in rank order on every rank, so all ranks end with
identical tables (a duplicated example resolves to the highest rank's norms everywhere).
It pickles through ``all_gather_object``: ~``4 * batch * positions * layers`` bytes per rank
per step. Limits: a layer called several times in one step (a shared module) keeps the norms
of the last backward call; examples are identified only by the trainer's integer indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import DistContext

__all__ = ["GradNormCache", "as_example_indices"]

_STATE_VERSION = 1


def as_example_indices(examples: Tensor | Sequence[int], where: str = "example indices"
                       ) -> Tensor:
    """``examples`` as a 1-D int64 CPU tensor of indices ``>= 0`` (``ValueError`` otherwise)."""
    ex = examples if isinstance(examples, Tensor) else torch.as_tensor(list(examples))
    if ex.dim() != 1 or ex.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(
            f"{where} must be a 1-D integer tensor or sequence of ints, got dtype {ex.dtype} "
            f"and shape {tuple(ex.shape)}"
        )
    ex = ex.detach().to("cpu", torch.int64)
    if ex.numel() and int(ex.min()) < 0:
        raise ValueError(f"{where} must be >= 0, got {int(ex.min())}")
    return ex


class GradNormCache:
    """Per-layer tables of output-gradient row norms, keyed by example index and position.

    ``dtype``: storage dtype (bfloat16 by default; float32 for exact bookkeeping in tests).
    Layers call :meth:`lookup` in forward and :meth:`update` in backward; the trainer calls
    :meth:`sync` after backward under DDP and checkpoints :meth:`state_dict`.
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"Invalid dtype: {dtype!r} (expected a floating-point dtype)")
        self.dtype = dtype
        self._tables: dict[str, Tensor] = {}  # layer -> (capacity, positions), NaN = unknown
        self._rows: dict[str, int] = {}  # logical number of example rows per layer
        self._reserved = 0
        self._pending: list[tuple[str, Tensor, Tensor]] = []

    # -- reading --------------------------------------------------------------------------------
    def lookup(self, layer: str, examples: Tensor, positions: int) -> Tensor:
        """Norms of ``examples`` (1-D indices) at positions ``0..positions-1``: float32
        ``(len(examples), positions)`` on the CPU, NaN where never recorded."""
        ex = as_example_indices(examples)
        out = torch.full((ex.numel(), positions), float("nan"), dtype=torch.float32)
        table = self._tables.get(layer)
        if table is None:
            return out
        rows = self._rows[layer]
        inside = ex < rows
        width = min(positions, table.shape[1])
        if bool(inside.any()) and width > 0:
            out[inside, :width] = table[ex[inside], :width].to(torch.float32)
        return out

    def layers(self) -> list[str]:
        """Names of the layers with a table, sorted."""
        return sorted(self._tables)

    def nbytes(self, layer: str | None = None) -> int:
        """Bytes held by ``layer``'s table (all tables when ``None``), capacity included."""
        tables = self._tables.values() if layer is None else [self._tables.get(layer)]
        return sum(t.numel() * t.element_size() for t in tables if t is not None)

    def num_known(self, layer: str) -> int:
        """How many (example, position) entries of ``layer`` hold a norm."""
        table = self._tables.get(layer)
        if table is None:
            return 0
        return int((~torch.isnan(table[: self._rows[layer]])).sum())

    # -- writing --------------------------------------------------------------------------------
    def reserve(self, num_examples: int) -> None:
        """Allocate room for example indices ``< num_examples`` up front (no regrowth)."""
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
            raise ValueError(f"Invalid num_examples: {num_examples!r} (must be an int >= 0)")
        self._reserved = max(self._reserved, num_examples)

    def update(self, layer: str, examples: Tensor, norms: Tensor) -> None:
        """Record ``norms`` (``(len(examples), positions)``, any device) as ``layer``'s latest
        norms of ``examples``; normalised by their mean, skipped when not all finite. Queued
        for :meth:`sync` while a multi-process group is initialised."""
        ex = as_example_indices(examples)
        if norms.dim() != 2 or norms.shape[0] != ex.numel():
            raise ValueError(
                f"norms must have shape (len(examples), positions) = ({ex.numel()}, P), got "
                f"{tuple(norms.shape)}"
            )
        n = norms.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(n).all()):
            return
        mean = n.mean() if n.numel() else n.new_zeros(())
        n = n / mean if float(mean) > 0 else torch.zeros_like(n)
        self._write(layer, ex, n)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self._pending.append((layer, ex, n))

    def _write(self, layer: str, ex: Tensor, n: Tensor) -> None:
        if ex.numel() == 0:
            return
        if torch.unique(ex).numel() != ex.numel():
            # one write per example: the last occurrence wins (index_put_ with duplicates is
            # unordered)
            last = {int(e): i for i, e in enumerate(ex.tolist())}
            keep = torch.tensor(sorted(last.values()), dtype=torch.int64)
            ex, n = ex[keep], n[keep]
        need_rows = max(int(ex.max()) + 1, self._rows.get(layer, 0))
        table = self._ensure(layer, need_rows, n.shape[1])
        table[ex, : n.shape[1]] = n.to(self.dtype)
        self._rows[layer] = need_rows

    def _ensure(self, layer: str, rows: int, positions: int) -> Tensor:
        table = self._tables.get(layer)
        if table is not None and table.shape[0] >= rows and table.shape[1] >= positions:
            return table
        old_rows, old_pos = (0, 0) if table is None else table.shape
        cap = max(rows, self._reserved, old_rows)
        if table is not None and rows > old_rows:
            cap = max(cap, 2 * old_rows)  # geometric growth: amortised O(1) per example
        new = torch.full((cap, max(positions, old_pos)), float("nan"), dtype=self.dtype)
        if table is not None:
            new[:old_rows, :old_pos] = table
        self._tables[layer] = new
        return new

    # -- DDP ------------------------------------------------------------------------------------
    def sync(self, dist_ctx: DistContext | None = None) -> None:
        """Make every rank's cache identical: all-gather the updates queued since the last sync
        and apply all ranks' updates in rank order. A no-op (that clears the queue) in a single
        process. Every rank must call it at the same point."""
        ctx = DistContext.current() if dist_ctx is None else dist_ctx
        pending, self._pending = self._pending, []
        if not ctx.enabled:
            return
        payload = [(layer, ex, n) for layer, ex, n in pending]
        for updates in ctx.all_gather_object(payload):
            for layer, ex, n in updates:
                self._write(layer, ex, n)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tables trimmed to their logical size (CPU tensors in the storage dtype)."""
        return {
            "version": _STATE_VERSION,
            "dtype": str(self.dtype).removeprefix("torch."),
            "reserved": self._reserved,
            "tables": {k: t[: self._rows[k]].clone() for k, t in sorted(self._tables.items())},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the cache with ``state`` (from :meth:`state_dict`); queued updates dropped."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"not a GradNormCache state (version {_STATE_VERSION} expected): "
                f"{type(state).__name__}"
            )
        tables = state["tables"]
        self._reserved = int(state.get("reserved", 0))
        self._tables, self._rows, self._pending = {}, {}, []
        for layer, t in tables.items():
            if not isinstance(t, Tensor) or t.dim() != 2:
                raise ValueError(f"cache table {layer!r} must be a 2-D tensor")
            rows = t.shape[0]
            table = self._ensure(layer, rows, t.shape[1])
            table[:rows, : t.shape[1]] = t.to(self.dtype)
            self._rows[layer] = rows

    def __repr__(self) -> str:
        return (
            f"GradNormCache(layers={len(self._tables)}, dtype={self.dtype}, "
            f"bytes={self.nbytes()})"
        )
