"""Crash-safe checkpoint files.

``save_checkpoint`` writes to a temporary file in the destination folder, flushes and fsyncs it,
then ``os.replace``-s it over the destination (and fsyncs the folder), so a reader sees either
the previous complete file or the new complete file, never a torn one, even if the process is
killed (SIGKILL) or the machine loses power mid-write. A killed writer can leave a stray
``.<name>.*.tmp`` file behind; :func:`remove_stale_temp_files` deletes them.

:func:`write_run_checkpoint` / :func:`read_run_checkpoint` lay a run's checkpoint out in its
:class:`~tamegrad.train.run_folder.RunFolder`: one shared file plus, in distributed runs, one
shard per rank for what differs between ranks.

``load_checkpoint`` uses ``torch.load(weights_only=True)``: payloads may contain only tensors,
numbers, strings, None and (nested) dicts/lists/tuples of those, which is what the trainer
stores. Arbitrary Python objects are refused rather than unpickled.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

from tamegrad._atomic import atomic_write

from ..distributed import DistContext
from .run_folder import RunFolder

FORMAT = "tamegrad-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, truncated, corrupt or not a tamegrad checkpoint.

    ``path`` is the file; the message names it. Loading never modifies the file.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"Cannot use checkpoint {self.path}: {reason}")


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (a dict) to ``path`` with ``torch.save``.

    The parent folder is created if needed. Adds ``format``/``version`` keys to a copy of the
    payload so that :func:`load_checkpoint` can tell a tamegrad checkpoint from other files.
    On any error the destination is left as it was and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda f: torch.save(data, f))
    _fsync_dir(path.parent)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` (naming the file) if it does not exist, cannot be read,
    is truncated/corrupt, holds objects that ``weights_only`` loading refuses, or is not a
    tamegrad checkpoint dict. The returned dict no longer has the ``format``/``version`` keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            path, f"the file is unreadable, truncated or corrupt ({type(exc).__name__}: {first})"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(path, "not a tamegrad checkpoint (missing format marker)")
    if data.get("version") != VERSION:
        raise CheckpointError(
            path, f"unsupported checkpoint version {data.get('version')!r} (expected {VERSION})"
        )
    data = dict(data)
    del data["format"], data["version"]
    return data


def remove_stale_temp_files(path: str | os.PathLike[str]) -> None:
    """Delete temporary files that a killed :func:`save_checkpoint` to ``path`` left behind.

    Only call this when no other process is writing the same checkpoint.
    """
    path = Path(path)
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# a run's checkpoint: one shared file, plus one shard per rank in distributed runs


def write_run_checkpoint(
    folder: RunFolder, dist: DistContext, shared: dict[str, Any], own: dict[str, Any], step: int
) -> None:
    """Write a run's checkpoint taken after optimizer step ``step``; every rank calls this.

    Single process: ``own`` is merged into ``shared`` and written as ``checkpoints/last.pt``.
    Distributed: every rank writes ``own`` (its RNG, per-rank optimizer or sampler state) to
    its shard ``rank<r>-step<step>.pt``; after a barrier rank 0 writes the shared file, which
    names the step of the shards it belongs to; after a second barrier each rank deletes its
    older shards. Each file is atomic, and a crash at any point leaves a shared file whose
    shards exist (the old ones are deleted only after the new shared file is in place).
    """
    if not dist.enabled:
        save_checkpoint(folder.checkpoint_path, {**shared, **own, "world_size": 1})
        return
    shard = folder.shard_path(dist.rank, step)
    save_checkpoint(shard, {**own, "rank": dist.rank, "step": step})
    dist.barrier()
    if dist.is_main:
        save_checkpoint(
            folder.checkpoint_path,
            {**shared, "world_size": dist.world_size, "shard_step": step},
        )
    dist.barrier()
    for old in folder.shard_paths(dist.rank):
        if old != shard:
            with contextlib.suppress(OSError):
                old.unlink()


def read_run_checkpoint(folder: RunFolder, dist: DistContext) -> dict[str, Any]:
    """Read the checkpoint written by :func:`write_run_checkpoint`: the shared entries with this
    rank's own entries merged over them (rank 0's RNG for checkpoints older than shards).

    Raises :class:`CheckpointError` when the file or this rank's shard is missing or corrupt,
    or when the checkpoint was written by a different number of processes.
    """
    path = folder.checkpoint_path
    data = load_checkpoint(path)
    world = data.get("world_size")
    if world is None:  # written before shards existed: rank 0's state serves every rank
        return data
    if int(world) != dist.world_size:
        raise CheckpointError(
            path, f"it was written by {world} process(es) and this run has {dist.world_size}; "
            "resume with the same number of processes"
        )
    if not dist.enabled:
        return data
    step = int(data["shard_step"])
    own = load_checkpoint(folder.shard_path(dist.rank, step))
    if own.get("rank") != dist.rank or own.get("step") != step:
        raise CheckpointError(
            folder.shard_path(dist.rank, step), f"it is not rank {dist.rank}'s shard of step {step}"
        )
    merged = {**data, **{k: v for k, v in own.items() if k not in ("rank", "step", "states")}}
    merged["states"] = {**(data.get("states") or {}), **(own.get("states") or {})}
    return merged
