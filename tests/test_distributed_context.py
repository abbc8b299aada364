"""tamegrad.distributed.DistContext: single-process identities and 2-process gloo collectives."""

from __future__ import annotations

import pytest
import torch

from _dist import gloo_available, run_distributed
from tamegrad.distributed import DistContext, init_from_env


def test_single_process_collectives_are_identities():
    ctx = DistContext.current()
    assert not ctx.enabled and ctx.is_main and ctx.world_size == 1
    t = torch.arange(3.0)
    assert ctx.all_reduce_(t, "max") is t and torch.equal(t, torch.arange(3.0))
    assert torch.equal(ctx.all_gather(t), t.unsqueeze(0))
    assert [x.tolist() for x in ctx.all_gather_varlen(t)] == [[0.0, 1.0, 2.0]]
    assert ctx.all_gather_object({"a": 1}) == [{"a": 1}]
    assert ctx.broadcast_object("x") == "x"
    ctx.barrier()
    with pytest.raises(ValueError, match="op="):
        ctx.all_reduce_(t, "mean")


def test_init_from_env_without_torchrun_is_single(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_from_env("cpu")
    assert ctx.world_size == 1 and not ctx.owns_group
    ctx.shutdown()  # nothing to destroy


def _collectives(rank: int, world: int, out: str) -> None:
    ctx = DistContext.current()
    assert ctx.rank == rank and ctx.world_size == world and ctx.enabled
    s = ctx.all_reduce_(torch.tensor([float(rank + 1)]))
    m = ctx.all_reduce_(torch.tensor([float(rank + 1)]), "max")
    g = ctx.all_gather(torch.full((2,), float(rank)))
    v = ctx.all_gather_varlen(torch.arange(rank + 1, dtype=torch.int64))
    b = ctx.broadcast_(torch.tensor([float(rank + 7)]), src=1)
    o = ctx.all_gather_object({"rank": rank})
    bo = ctx.broadcast_object(f"from{rank}", src=0)
    torch.save({"s": s, "m": m, "g": g, "v": v, "b": b, "o": o, "bo": bo}, f"{out}/r{rank}.pt")


@pytest.mark.skipif(not gloo_available(), reason="gloo not available")
def test_two_process_collectives(tmp_path):
    run_distributed(_collectives, 2, str(tmp_path))
    for rank in (0, 1):
        r = torch.load(tmp_path / f"r{rank}.pt", weights_only=False)
        assert r["s"].item() == 3.0 and r["m"].item() == 2.0
        assert torch.equal(r["g"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        assert [x.tolist() for x in r["v"]] == [[0], [0, 1]]
        assert r["b"].item() == 8.0
        assert r["o"] == [{"rank": 0}, {"rank": 1}]
        assert r["bo"] == "from0"
