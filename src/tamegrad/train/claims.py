"""Claim files: several processes share one grid without running a cell twice.

Every cell is claimed with an atomic ``O_CREAT | O_EXCL`` file ``run_dir/.claim`` holding the
claimant's host and PID; a claim left by a dead process on this host is broken (under a short
``flock`` on the grid folder) and re-taken. A claim made on another host is never broken (its
process cannot be checked from here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("tamegrad.train.compare")

CLAIM_FILE = ".claim"
_GRID_LOCK = ".grid.lock"

_HOST = socket.gethostname()
# Claim files this process holds right now (a claim with our PID that is not in here is a
# leftover of an aborted attempt; one that is belongs to another thread of this process).
_HELD: set[str] = set()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _claim_is_stale(path: Path) -> bool:
    """True when the claim at ``path`` belongs to a process on this host that is gone."""
    try:
        data = json.loads(path.read_text())
        pid = int(data["pid"])
        host = str(data.get("host", _HOST))
    except FileNotFoundError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        # Half-written claim: the writer may still be writing; treat it as stale only when old.
        try:
            return time.time() - path.stat().st_mtime > 30.0
        except OSError:
            return True
    if host != _HOST:
        return False  # cannot check a process on another machine; assume it is alive
    if pid == os.getpid():
        return str(path.resolve()) not in _HELD
    return not _pid_alive(pid)


@contextlib.contextmanager
def _grid_lock(out_dir: Path) -> Iterator[None]:
    """A short exclusive ``flock`` over the grid (auto-released if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    fd = os.open(Path(out_dir) / _GRID_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def try_claim(run_dir: Path, out_dir: Path) -> bool:
    """Atomically claim ``run_dir`` for this process; False when a live process holds it.

    The claim file is created with ``O_CREAT | O_EXCL`` and records host, PID and time. A claim
    whose process is dead is removed and re-taken; that check-and-break happens under an
    ``flock`` on the grid, so two workers cannot both break the same stale claim.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    payload = json.dumps({"pid": os.getpid(), "host": _HOST, "time": time.time()}).encode()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with _grid_lock(out_dir):
                if not _claim_is_stale(path):
                    return False
                log.info("breaking stale claim %s", path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:  # a live worker claimed it in between
                    return False
                _write_claim(fd, payload, path)
                return True
        _write_claim(fd, payload, path)
        return True
    return False  # pragma: no cover


def _write_claim(fd: int, payload: bytes, path: Path) -> None:
    _HELD.add(str(path.resolve()))
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


def release_claim(run_dir: Path) -> None:
    """Remove this process's claim on ``run_dir`` (no-op when the claim is someone else's)."""
    path = Path(run_dir) / CLAIM_FILE
    key = str(path.resolve())
    if key not in _HELD:
        return
    _HELD.discard(key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if data.get("pid") == os.getpid() and data.get("host") == _HOST:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
