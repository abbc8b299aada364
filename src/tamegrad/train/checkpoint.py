"""Crash-safe checkpoint files.

``save_checkpoint`` writes to a temporary file in the destination folder, flushes and fsyncs it,
then ``os.replace``-s it over the destination (and fsyncs the folder), so a reader sees either
the previous complete file or the new complete file, never a torn one, even if the process is
killed (SIGKILL) or the machine loses power mid-write. A killed writer can leave a stray
``.<name>.*.tmp`` file behind; :func:`remove_stale_temp_files` deletes them.

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
