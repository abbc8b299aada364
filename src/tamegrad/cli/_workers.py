"""Worker processes of a grid: spawning, thread counts, and dying with the parent.

The parent (``tamegrad compare --workers N``) starts N ``tamegrad compare --resume DIR --worker
K`` processes. On Ctrl-C or SIGTERM the parent forwards SIGTERM to its workers, which stop
cleanly (their running cell is recorded "interrupted" and its claim released) and waits for
them; a worker whose parent dies without that (SIGKILL) gets SIGTERM from the kernel
(``PR_SET_PDEATHSIG``, Linux) and stops the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("tamegrad")

#: Environment variable naming the parent's PID in a worker process.
PARENT_ENV = "TAMEGRAD_PARENT_PID"
_PR_SET_PDEATHSIG = 1
#: Seconds the parent waits for interrupted workers before killing them.
STOP_TIMEOUT = 60.0


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def set_threads(n: int | None) -> int:
    """Set torch's intra-op thread count (when ``n`` is given); return the count in effect."""
    import torch

    if n is not None:
        torch.set_num_threads(int(n))
    return int(torch.get_num_threads())


def die_with_parent() -> None:
    """In a worker started by :func:`spawn_workers`: get SIGTERM when the parent dies.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); a parent that is already gone ends the worker at
    once. Elsewhere a no-op (the parent's SIGTERM forwarding still applies).
    """
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):
        raise KeyboardInterrupt("the parent process is gone")


def spawn_workers(out_dir: Path, num_workers: int, threads: int, *, log_level: str,
                  quiet_epochs: bool, retry_failed: bool) -> list[int]:
    """Run ``num_workers`` ``tamegrad compare --resume`` worker processes; return exit codes.

    On ``KeyboardInterrupt`` in the parent (Ctrl-C, or SIGTERM turned into one) every worker
    still running gets SIGTERM, the parent waits for them (killing those that take longer than
    :data:`STOP_TIMEOUT`), then re-raises.
    """
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env[PARENT_ENV] = str(os.getpid())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for k in range(num_workers):
            quiet = ["--quiet-epochs"] if quiet_epochs else []
            cmd = [sys.executable, "-m", "tamegrad", "--log-level", log_level, *quiet, "compare",
                   "--resume", str(out_dir), "--workers", str(num_workers), "--worker", str(k),
                   "--threads", str(threads), "--no-plot", "--no-results"]
            if retry_failed:
                cmd.append("--retry-failed")
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        stop_workers(procs)
        raise


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every running worker, wait for all (SIGKILL after :data:`STOP_TIMEOUT`)."""
    with _ignoring_interrupts():
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        log.warning("interrupted: waiting for %d worker(s) to stop", len(procs))
        for p in procs:
            try:
                p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@contextlib.contextmanager
def _ignoring_interrupts() -> Iterator[None]:
    """Ignore further SIGINT/SIGTERM while the workers are being stopped (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
