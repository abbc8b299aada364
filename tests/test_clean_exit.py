"""tamegrad._clean_exit: a gloo group is really freed by destroy_process_group.

The flaky SIGABRT at exit of distributed runs (issue 11) comes from a ProcessGroup that outlives
``dist.destroy_process_group()`` because ``torch.distributed.nn.functional``, imported after the
group was created (an optimizer imports it through ``torch._dynamo``), keeps it in default
arguments; its gloo worker threads then meet interpreter teardown. The abort itself is a race,
so this checks the mechanism deterministically: the group's gloo threads must be gone after our
destroy (with ``dist.destroy_process_group()`` in its place they stay alive, torch 2.13). The
end-to-end version, with the real trigger (an optimizer step after init), is the torchrun driver
of tests/test_ddp.py, which makes the same check after training.

A one-process gloo group (in-memory store, no port) in this process; always destroyed again.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import torch.distributed as dist

from tamegrad._clean_exit import destroy_process_group, gloo_thread_names, release_group_references

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available() or gloo_thread_names() is None,
    reason="needs torch.distributed with gloo, and /proc/self/task to list threads",
)


@pytest.fixture
def one_process_group():
    assert not dist.is_initialized() and gloo_thread_names() == []
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_destroy_frees_a_group_torch_captured_after_init(one_process_group):
    # importing the module while the group exists, as torch._dynamo does on an optimizer's
    # first use after init_process_group (reload: the pytest process imported it long ago)
    nnf = importlib.reload(importlib.import_module("torch.distributed.nn.functional"))
    t = torch.ones(3)
    dist.all_reduce(t)
    assert t.tolist() == [1.0, 1.0, 1.0]
    assert gloo_thread_names(), "the check needs gloo worker threads while the group lives"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a group left alive would warn
        destroy_process_group()
    assert gloo_thread_names() == []
    assert all(d is None or not isinstance(d, dist.ProcessGroup)
               for f in vars(nnf).values() for d in (getattr(f, "__defaults__", None) or ()))


def test_destroy_warns_when_a_live_object_still_holds_the_group(one_process_group):
    user = dist.group.WORLD  # e.g. a DistributedDataParallel wrapper still alive
    dist.all_reduce(torch.ones(2))
    with pytest.warns(RuntimeWarning, match="outlive destroy_process_group"):
        destroy_process_group()
    del user
    assert gloo_thread_names() == []  # freed as soon as its last user let go


def test_release_without_a_group_changes_nothing():
    assert not dist.is_initialized()
    assert release_group_references() == 0
