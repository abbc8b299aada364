"""Run a function in N CPU processes with a gloo process group: the 2-process test harness.

``run_distributed(fn, world_size, *args)`` spawns ``world_size`` processes, initialises gloo in
each (127.0.0.1, a free port, one intra-op thread), calls ``fn(rank, world_size, *args)`` and
destroys the group. ``fn`` must be a module-level (picklable) function; it reports results by
writing files (``torch.save`` into a ``tmp_path`` passed in ``args``). A failure in any process
raises in the caller.

Clean exit (see ``tamegrad._clean_exit``): the group is created and destroyed through that
module, and after a successful ``fn`` each process checks that the group's gloo worker threads
are gone. A group still alive at interpreter teardown makes the process abort (SIGABRT) at
random; here it fails at once, naming the cause, instead of flaking.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tamegrad._clean_exit import (
    before_init_process_group,
    destroy_process_group,
    gloo_thread_names,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gloo_available() -> bool:
    return dist.is_available() and dist.is_gloo_available()


def _entry(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    before_init_process_group()
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        destroy_process_group()
    alive = gloo_thread_names()
    if alive:
        raise RuntimeError(
            f"rank {rank}: gloo threads {alive} outlive destroy_process_group(): something still "
            f"holds the ProcessGroup (a DDP module or group kept in a global?); such a process "
            f"can abort with SIGABRT at exit"
        )


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` gloo processes; raise on failure."""
    mp.spawn(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)
