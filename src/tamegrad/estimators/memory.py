"""Measure the activation memory a training step keeps for backward.

    with ActivationMeter(model) as meter:
        loss = loss_fn(model(x), y)         # the forward pass: what it saves is counted
    loss.backward()
    meter.report().activation_bytes         # bytes held for backward at the end of forward

Counting: every tensor autograd saves for backward passes through
``torch.autograd.graph.saved_tensors_hooks``; the meter keys it by its storage (device,
``untyped_storage().data_ptr()``), so views and tensors saved by several ops count once, and
counts the whole storage (``nbytes`` of the storage: a saved view keeps its base alive).
Storages of ``model``'s parameters and buffers (and of ``exclude``) are not activations and are
skipped; without a ``model`` only ``nn.Parameter`` objects themselves are recognised. A storage
stops being live when autograd drops every saved reference to it (after backward, or when an
unused part of the graph is freed); ``saved_bytes`` is the peak of the live sum, so a meter can
span forward and backward. On CUDA the report also carries ``torch.cuda.max_memory_allocated``.

Honest accounting protocol for estimator layers:

* seeds and indices saved as tensors (``ctx.save_for_backward``) are counted like any tensor;
* bytes a custom ``autograd.Function`` keeps on ``ctx`` as Python objects (ints, tuples) are
  not visible to the hooks: the function should declare them with :func:`note_saved_bytes`
  (e.g. 8 bytes per int64 seed); they are reported as ``noted_bytes``;
* persistent state a layer keeps across steps (e.g. a gradient-norm cache) is reported by a
  method ``estimator_extra_bytes() -> int`` on the module; the meter sums it over ``model``'s
  modules as ``extra_bytes``.

Limits: other ``saved_tensors_hooks`` entered inside the meter (``torch.utils.checkpoint``
with ``use_reentrant=False``, CPU offloading) take precedence, so what they save is not seen
(checkpoint's stored block inputs are held outside autograd's saved tensors: count them by
saving them through an identity ``autograd.Function``, as ``benchmarks/estimators_rad.py``
does). Meters do not nest (entering a second one in the same thread raises). Memory that
autograd holds but does not route through the hooks (the graph's node objects, small
shape/stride metadata) is not counted.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ActivationMeter",
    "MemoryReport",
    "largest_batch_that_fits",
    "measure_activation_bytes",
    "note_saved_bytes",
]

_local = threading.local()


def note_saved_bytes(nbytes: int) -> None:
    """Declare ``nbytes`` kept for backward outside tensors (e.g. ints on ``ctx``).

    Adds to the active :class:`ActivationMeter` of this thread (attributed to the module
    running); a no-op when none is active, so layers may call it unconditionally.
    """
    meter: ActivationMeter | None = getattr(_local, "meter", None)
    if meter is not None:
        meter._note(int(nbytes))


@dataclass(frozen=True)
class MemoryReport:
    """What one :class:`ActivationMeter` context measured.

    ``saved_bytes``: peak over the context of the bytes of distinct live storages saved for
    backward (parameters and buffers excluded). ``saved_bytes_total``: every distinct storage
    ever saved (equal to ``saved_bytes`` when the context spans one forward pass).
    ``noted_bytes``: bytes declared with :func:`note_saved_bytes`. ``extra_bytes``: persistent
    estimator state (``estimator_extra_bytes()`` of the model's modules). ``per_layer``:
    qualified module name -> saved (+ noted) bytes first saved while that module was the
    innermost one running (``""``: outside any module of ``model``); empty without a model or
    with ``per_layer=False``. ``cuda_peak_bytes`` / ``cuda_start_bytes``:
    ``torch.cuda.max_memory_allocated`` during the context and ``memory_allocated`` at entry,
    ``None`` off CUDA.
    """

    saved_bytes: int
    saved_bytes_total: int
    saved_tensors: int
    noted_bytes: int
    extra_bytes: int
    per_layer: dict[str, int] = field(default_factory=dict)
    cuda_peak_bytes: int | None = None
    cuda_start_bytes: int | None = None

    @property
    def activation_bytes(self) -> int:
        """Bytes kept for backward: ``saved_bytes + noted_bytes``."""
        return self.saved_bytes + self.noted_bytes

    @property
    def total_bytes(self) -> int:
        """``activation_bytes + extra_bytes``."""
        return self.activation_bytes + self.extra_bytes

    def as_metrics(self, prefix: str = "mem_") -> dict[str, int]:
        """Flat integer fields for a metrics row (``None`` CUDA fields left out)."""
        row = {
            f"{prefix}activation_bytes": self.activation_bytes,
            f"{prefix}saved_bytes": self.saved_bytes,
            f"{prefix}noted_bytes": self.noted_bytes,
            f"{prefix}extra_bytes": self.extra_bytes,
        }
        if self.cuda_peak_bytes is not None:
            row[f"{prefix}cuda_peak_bytes"] = self.cuda_peak_bytes
        return row


class _Saved:
    """What the pack hook stores in place of a tensor: the tensor and a release callback."""

    __slots__ = ("__weakref__", "key", "meter", "tensor")

    def __init__(self, tensor: Tensor, meter: ActivationMeter | None, key: Any) -> None:
        self.tensor = tensor
        self.meter = meter
        self.key = key

    def __del__(self) -> None:
        if self.meter is not None:
            self.meter._release(self.key)


class ActivationMeter:
    """Context manager counting the bytes autograd saves for backward (see the module doc).

    ``model``: its parameters and buffers are excluded, its module names label ``per_layer``
    and its modules' ``estimator_extra_bytes()`` are summed. ``exclude``: more tensors whose
    storages are not activations (e.g. a frozen embedding table passed in by hand).
    ``per_layer``: attribute bytes to modules (one forward pre-/post-hook per module of
    ``model``; set False to skip that overhead). ``device``: the CUDA device whose peak is
    recorded; by default the device of ``model``'s first parameter when it is CUDA.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        exclude: Iterable[Tensor] = (),
        per_layer: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self._exclude_tensors = list(exclude)
        self.per_layer = bool(per_layer) and model is not None
        if device is None and model is not None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else None
        dev = torch.device(device) if device is not None else None
        self._cuda = dev if dev is not None and dev.type == "cuda" else None
        self._report: MemoryReport | None = None
        self._reset()

    def _reset(self) -> None:
        self._live: dict[Any, list[int]] = {}  # key -> [refcount, nbytes]
        self._live_bytes = 0
        self._peak = 0
        self._total = 0
        self._count = 0
        self._noted = 0
        self._by_layer: dict[str, int] = {}
        self._stack: list[str] = []
        self._active = False

    # -- hooks -------------------------------------------------------------------------------
    def _current(self) -> str:
        return self._stack[-1] if self._stack else ""

    def _pack(self, t: Tensor) -> Any:
        if not self._active or isinstance(t, nn.Parameter):
            return t
        try:
            storage = t.untyped_storage()
            key: Any = (t.device, storage.data_ptr())
            nbytes = int(storage.nbytes())
        except (RuntimeError, NotImplementedError):  # sparse / exotic layouts
            key, nbytes = ("id", id(t)), t.numel() * t.element_size()
        if key in self._excluded or nbytes == 0:
            return t
        entry = self._live.get(key)
        if entry is None:
            self._live[key] = [1, nbytes]
            self._live_bytes += nbytes
            self._peak = max(self._peak, self._live_bytes)
            self._total += nbytes
            self._count += 1
            if self.per_layer:
                name = self._current()
                self._by_layer[name] = self._by_layer.get(name, 0) + nbytes
        else:
            entry[0] += 1
        return _Saved(t, self, key)

    @staticmethod
    def _unpack(obj: Any) -> Tensor:
        return obj.tensor if isinstance(obj, _Saved) else obj

    def _release(self, key: Any) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            del self._live[key]
            self._live_bytes -= entry[1]

    def _note(self, nbytes: int) -> None:
        if nbytes < 0:
            raise ValueError(f"Invalid nbytes: {nbytes} (must be >= 0)")
        self._noted += nbytes
        if self.per_layer:
            name = self._current()
            self._by_layer[name] = self._by_layer.get(name, 0) + nbytes

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> ActivationMeter:
        if getattr(_local, "meter", None) is not None:
            raise RuntimeError("ActivationMeter contexts do not nest (one is already active)")
        self._reset()
        self._report = None
        excluded: set[Any] = set()
        tensors: list[Tensor] = list(self._exclude_tensors)
        if self.model is not None:
            tensors += list(self.model.parameters()) + list(self.model.buffers())
        for t in tensors:
            excluded.add((t.device, t.untyped_storage().data_ptr()))
        self._excluded = excluded
        self._handles: list[Any] = []
        if self.per_layer and self.model is not None:
            for name, mod in self.model.named_modules():
                self._handles.append(mod.register_forward_pre_hook(self._make_pre(name)))
                self._handles.append(mod.register_forward_hook(self._post, always_call=True))
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
            torch.cuda.reset_peak_memory_stats(self._cuda)
            self._cuda_start: int | None = torch.cuda.memory_allocated(self._cuda)
        else:
            self._cuda_start = None
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        self._active = True
        _local.meter = self
        return self

    def _make_pre(self, name: str) -> Callable[..., None]:
        def pre(module: nn.Module, args: Any) -> None:
            self._stack.append(name)

        return pre

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._stack:
            self._stack.pop()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _local.meter = None
        self._active = False
        self._hooks.__exit__(exc_type, exc, tb)
        for h in self._handles:
            h.remove()
        self._handles = []
        peak = None
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
            peak = torch.cuda.max_memory_allocated(self._cuda)
        extra = 0
        if self.model is not None:
            for m in self.model.modules():
                fn = getattr(m, "estimator_extra_bytes", None)
                if callable(fn):
                    extra += int(fn())
        self._report = MemoryReport(
            saved_bytes=self._peak,
            saved_bytes_total=self._total,
            saved_tensors=self._count,
            noted_bytes=self._noted,
            extra_bytes=extra,
            per_layer=dict(self._by_layer),
            cuda_peak_bytes=peak,
            cuda_start_bytes=self._cuda_start,
        )

    def report(self) -> MemoryReport:
        """The measurement of the last finished context (``RuntimeError`` before one ends)."""
        if self._report is None:
            raise RuntimeError("ActivationMeter.report() is available after the context exits")
        return self._report


def measure_activation_bytes(
    step: Callable[[int], Any], batch_size: int, *, model: nn.Module | None = None
) -> int:
    """``activation_bytes`` of ``step(batch_size)``, a callable running one forward pass (and
    optionally its backward); parameters and buffers of ``model`` are excluded."""
    with ActivationMeter(model, per_layer=False) as meter:
        out = step(batch_size)
    del out
    return meter.report().activation_bytes


def largest_batch_that_fits(
    step: Callable[[int], Any],
    budget_bytes: int,
    *,
    model: nn.Module | None = None,
    max_batch: int = 1 << 16,
) -> int:
    """The largest batch size whose measured activation bytes are ``<= budget_bytes``.

    ``step(b)`` must run the forward pass of a training step at batch size ``b`` (it may also
    run backward). Activation bytes are assumed non-decreasing in the batch size (true for
    the usual networks); the search doubles up to ``max_batch`` and then bisects, measuring
    O(log max_batch) steps. Returns 0 when even batch 1 exceeds the budget. This is the
    equal-memory baseline of the RAD paper (the exact gradient at the batch that fits).
    """
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, float)) or (
        not math.isfinite(budget_bytes) or budget_bytes < 0
    ):
        raise ValueError(f"Invalid budget_bytes: {budget_bytes!r} (must be a number >= 0)")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"Invalid max_batch: {max_batch!r} (must be an integer >= 1)")

    def fits(b: int) -> bool:
        return measure_activation_bytes(step, b, model=model) <= budget_bytes

    if not fits(1):
        return 0
    lo, hi = 1, 2  # fits(lo) is True
    while hi <= max_batch and fits(hi):
        lo, hi = hi, hi * 2
    if hi > max_batch:
        hi = max_batch + 1
        if lo < max_batch and fits(max_batch):
            return max_batch
    while hi - lo > 1:  # fits(lo), not fits(hi) (or hi == max_batch + 1 already excluded)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
