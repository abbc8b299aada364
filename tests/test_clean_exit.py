"""tamegrad._clean_exit: a gloo group is really freed by destroy_process_group.

The flaky SIGABRT at exit of distributed runs (issue 11) comes from a ProcessGroup that outlives
``dist.destroy_process_group()`` because torch keeps it in default arguments of functions it
imported after the group was created (an optimizer imports ``torch._dynamo``); its gloo worker
threads then meet interpreter teardown. The abort itself is a race, so this checks the
mechanism deterministically in a fresh process: the group's gloo threads must be gone after our
destroy. With ``dist.destroy_process_group()`` in its place they stay alive (torch 2.13).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tamegrad._clean_exit import gloo_thread_names, release_group_references

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available()
    or gloo_thread_names() is None,
    reason="needs torch.distributed with gloo, and /proc/self/task to list threads",
)

# A one-process gloo group (in-memory store, no port), created before torch._dynamo is imported,
# as a user script or torchrun driver does; then an optimizer step (imports torch._dynamo) and a
# collective; then the destroy under test.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from tamegrad import _clean_exit

    mode = sys.argv[1]
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    torch.optim.SGD([p], lr=0.1).step()
    t = torch.ones(3)
    dist.all_reduce(t)
    during = _clean_exit.gloo_thread_names()
    held = sum(1 for f in vars(sys.modules["torch.distributed.nn.functional"]).values()
               if any(d is dist.group.WORLD for d in (getattr(f, "__defaults__", None) or ())))
    if mode == "plain":
        dist.destroy_process_group()
    else:
        _clean_exit.destroy_process_group()
    print(json.dumps({"during": during, "held": held, "after": _clean_exit.gloo_thread_names(),
                      "sum": t.tolist()}))
    """
)


def _run(mode: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_destroy_frees_a_group_torch_captured_after_init():
    r = _run("late")
    assert r["during"], "the check needs gloo worker threads while the group lives"
    assert r["sum"] == [1.0, 1.0, 1.0]
    # r["held"] > 0 with torch 2.13: the group sits in torch's default arguments (not asserted,
    # so a torch that stops doing this still runs the check below)
    assert r["after"] == [], f"gloo threads outlive destroy: {r['after']}"


def test_release_without_a_group_changes_nothing():
    # no process group in this pytest process: nothing to replace, and no other object touched
    assert not torch.distributed.is_initialized()
    assert release_group_references() == 0
