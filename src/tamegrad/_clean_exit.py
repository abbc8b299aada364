"""Let a gloo process exit cleanly: free the process group before the interpreter shuts down.

The crash this prevents (torch 2.13, CPU, gloo): a process that ran collectives ends with
SIGABRT, ``terminate called without an active exception``, after its work is done.

Cause. ``torch.distributed.nn.functional`` binds ``group=group.WORLD`` as a default argument of
ten functions when it is *imported*. ``torch._dynamo`` imports it, and every optimizer imports
``torch._dynamo`` (``torch._disable_dynamo`` on ``Optimizer`` methods), so building an optimizer
after ``init_process_group`` stores the world ``ProcessGroup`` in those defaults for good.
``dist.destroy_process_group()`` then drops the registry's references but the object lives on,
and so do its gloo worker threads (``pt_gloo_runloop``, ``gloo_tcp_loop``): normally the group's
destructor joins them. At interpreter teardown a worker thread can still be releasing its last
finished work (the tensors of the final collective); that needs the GIL, Python makes a thread
that asks for the GIL during finalization exit (``pthread_exit``), and the forced unwind through
a ``noexcept`` C++ frame calls ``std::terminate``. Core backtrace: ``runLoop`` ->
``~AsyncAllreduceWork`` -> ``TensorImpl::decref_pyobject`` -> ``gil_scoped_acquire`` ->
``take_gil`` -> ``PyThread_exit_thread`` -> ``std::terminate``. Whether the thread is still
there is a race, hence a flaky exit, more often on a loaded machine.

Fix, in two places (use both):

- :func:`before_init_process_group` imports ``torch.distributed.nn.functional`` while no group
  exists, so its defaults are ``None`` ("the default group", the same meaning) instead of a
  group object.
- :func:`destroy_process_group` (a drop-in for ``dist.destroy_process_group``) first replaces
  every group being destroyed that a ``torch.*`` module function keeps as a default argument by
  ``None`` (for groups created before that module was imported, e.g. by a caller that initialised
  the group itself), destroys, then collects garbage so a group held only by a reference cycle
  (a dropped DDP module) is freed now, while Python can still run the worker threads' cleanup.

What this cannot do: free a group that live objects still hold at exit (a module-level
``DistributedDataParallel`` wrapper, a ``ProcessGroup`` kept in a global); drop those before
exiting. It only scans plain functions of loaded ``torch`` modules, not methods or partials.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import types
import warnings
from typing import Any

import torch.distributed as dist

__all__ = ["before_init_process_group", "destroy_process_group", "gloo_thread_names",
           "release_group_references"]

# modules that evaluate ``group.WORLD`` at import time (default arguments)
_BINDS_WORLD_AT_IMPORT = ("torch.distributed.nn.functional",)
_GLOO_THREADS = ("pt_gloo_runloop", "gloo_tcp_loop")


def before_init_process_group() -> None:
    """Call right before ``dist.init_process_group``: imports the torch modules that would
    otherwise capture the world group in their default arguments (cheap: torch.distributed is
    already loaded). Does nothing if torch.distributed is unavailable."""
    if not dist.is_available():
        return
    for name in _BINDS_WORLD_AT_IMPORT:
        importlib.import_module(name)


def release_group_references(groups: list[Any] | None = None) -> int:
    """Replace ``groups`` (default: every ``ProcessGroup``) found among the default arguments of
    plain functions of loaded ``torch`` modules by ``None``; return how many were replaced.

    ``None`` is what those defaults are when the module is imported before any group exists,
    and means "the default group" to the collectives they pass it to.
    """
    if not dist.is_available():
        return 0
    process_group = dist.ProcessGroup

    def stale(value: Any) -> bool:
        if groups is None:
            return issubclass(type(value), process_group)
        return any(value is g for g in groups)

    replaced = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "torch" or name.startswith("torch.")):
            continue
        for value in list(vars(module).values()):
            if type(value) is not types.FunctionType:  # never touch other objects' attributes
                continue
            defaults = value.__defaults__
            if defaults and any(stale(d) for d in defaults):
                value.__defaults__ = tuple(None if stale(d) else d for d in defaults)
                replaced += sum(stale(d) for d in defaults)
            kwdefaults = value.__kwdefaults__
            if kwdefaults and any(stale(d) for d in kwdefaults.values()):
                replaced += sum(stale(d) for d in kwdefaults.values())
                value.__kwdefaults__ = {k: (None if stale(d) else d) for k, d in kwdefaults.items()}
    return replaced


def destroy_process_group(group: Any = None) -> None:
    """``dist.destroy_process_group(group)`` that also frees the group object (and so joins its
    gloo worker threads) now rather than during interpreter teardown, where it can abort the
    process. Call it instead of ``dist.destroy_process_group`` at the end of a distributed run;
    ``group=None`` destroys every group, as torch's does; then, on Linux, a ``RuntimeWarning``
    says if gloo threads are still alive, i.e. something still holds a group (drop DDP wrappers
    and other users of the group before calling this)."""
    release_group_references(None if group is None else [group])
    dist.destroy_process_group(group)
    gc.collect()
    alive = gloo_thread_names() if group is None else None  # with a subgroup, others may live
    if alive:
        warnings.warn(
            f"gloo threads {alive} outlive destroy_process_group(): a live object still holds a "
            "ProcessGroup (a DistributedDataParallel wrapper, a group kept in a global); drop it "
            "before exiting, or the process may abort (SIGABRT) at interpreter teardown",
            RuntimeWarning, stacklevel=2,
        )


def gloo_thread_names() -> list[str] | None:
    """Names of this process's live gloo worker threads, or ``None`` where the OS does not list
    threads by name (only Linux's ``/proc/self/task`` is read). For tests and diagnostics: after
    a clean :func:`destroy_process_group` (and no live user of the group) the list is empty."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    names = []
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as fh:
                name = fh.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name.startswith(_GLOO_THREADS):
            names.append(name)
    return names
