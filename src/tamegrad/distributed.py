"""One distributed context for the whole package: the trainer, optimizers and samplers share it.

:class:`DistContext` is a small immutable view of a ``torch.distributed`` process group (rank,
world size, the group) with the handful of collectives this package uses. A single-process
context (``world_size == 1``) turns every collective into a no-op (or the identity), so library
code calls the same methods whether or not it runs under ``torchrun``.

:func:`init_from_env` is the engine's entry: under ``torchrun`` (``WORLD_SIZE`` > 1) it
initialises the default process group (gloo on CPU, nccl on CUDA) unless it already is, and
returns a context that owns the group; :meth:`DistContext.shutdown` destroys only a group the
context created.

Limits: collectives are blocking and use the group's backend as is (CPU tensors need gloo; with
nccl, tensors must live on the current CUDA device). Object collectives pickle, so they are
for small metadata, not for tensors on a hot path. Only single-machine gloo runs are tested.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistContext", "init_from_env"]

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "product": "PRODUCT"}


def _reduce_op(op: str) -> Any:
    if op not in _OPS:
        raise ValueError(f"op={op!r} is not one of {', '.join(_OPS)}")
    return getattr(dist.ReduceOp, _OPS[op])


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and process group of this process, with the collectives we use.

    ``group=None`` means the default (world) group. Build with :meth:`current` (from an
    initialised ``torch.distributed``, or a single process otherwise) or :func:`init_from_env`.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = None  # torch.distributed.ProcessGroup | None
    owns_group: bool = False

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def single(cls) -> DistContext:
        """A one-process context: every collective is a no-op."""
        return cls()

    @classmethod
    def current(cls, group: Any = None) -> DistContext:
        """The context of ``group`` (default: the world group) if ``torch.distributed`` is
        initialised, else a single-process context."""
        if not (dist.is_available() and dist.is_initialized()):
            if group is not None:
                raise ValueError(
                    "a process_group was given but torch.distributed is not initialised"
                )
            return cls.single()
        return cls(
            rank=dist.get_rank(group),
            world_size=dist.get_world_size(group),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            group=group,
        )

    # -- properties ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives ---------------------------------------------------------------------------

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.group)

    def all_reduce_(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """Reduce ``tensor`` in place over the ranks (``"sum"``, ``"max"``, ``"min"``,
        ``"product"``) and return it."""
        reduce_op = _reduce_op(op)
        if self.enabled:
            dist.all_reduce(tensor, op=reduce_op, group=self.group)
        return tensor

    def all_gather(self, tensor: Tensor) -> Tensor:
        """Stack every rank's ``tensor`` (same shape and dtype on all ranks): shape
        ``(world_size, *tensor.shape)``, rank order."""
        if not self.enabled:
            return tensor.unsqueeze(0).clone()
        # list form: gloo has no all_gather_into_tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous(), group=self.group)
        return torch.stack(parts)

    def all_gather_varlen(self, tensor: Tensor) -> list[Tensor]:
        """Gather tensors whose first dimension may differ between ranks (the other dimensions
        and the dtype must agree); returns one tensor per rank, in rank order."""
        if not self.enabled:
            return [tensor.clone()]
        n = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
        sizes = [int(s) for s in self.all_gather(n).flatten().tolist()]
        longest = max(sizes)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        gathered = self.all_gather(padded)
        return [gathered[r, : sizes[r]] for r in range(self.world_size)]

    def broadcast_(self, tensor: Tensor, src: int = 0) -> Tensor:
        """Overwrite ``tensor`` in place with rank ``src``'s and return it."""
        if self.enabled:
            dist.broadcast(tensor, src=self._global_rank(src), group=self.group)
        return tensor

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order (for small metadata)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=self._global_rank(src), group=self.group)
        return box[0]

    def _global_rank(self, group_rank: int) -> int:
        if self.group is None:
            return group_rank
        return int(dist.get_global_rank(self.group, group_rank))

    # -- lifetime ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Destroy the default process group if this context created it, freeing it now so its
        gloo threads cannot abort the interpreter's teardown (:mod:`tamegrad._clean_exit`; drop
        DDP wrappers of the group before calling this). A group the caller created is left
        initialised, only released from the references torch keeps in default arguments."""
        from . import _clean_exit

        if self.owns_group and dist.is_available() and dist.is_initialized():
            _clean_exit.destroy_process_group()
        elif self.enabled:  # the caller's group: let its own destroy free it later
            _clean_exit.release_group_references()


def init_from_env(device: str = "auto") -> DistContext:
    """The context for this process, initialising ``torch.distributed`` from ``torchrun``'s
    environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) if needed.

    Already initialised: the world group's context (not owned: :meth:`DistContext.shutdown`
    leaves it alone). ``WORLD_SIZE`` unset or 1: a single-process context. Otherwise the default
    group is created with nccl when ``device`` asks for CUDA (``"cuda"``, ``"cuda:N"``, or
    ``"auto"`` with CUDA available; the CUDA device is set to ``LOCAL_RANK``) and gloo otherwise.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext.current()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext.single()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    from ._clean_exit import before_init_process_group

    before_init_process_group()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
        owns_group=True,
    )
