"""TR optimizers under DistributedDataParallel: 2 CPU processes, gloo backend."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, name: str, out: str) -> None:
    import os

    from tamegrad.optim import create

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same init on both ranks
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = create(name, ddp.parameters(), lr=0.05, weight_decay=1e-4)
        g = torch.Generator().manual_seed(100 + rank)  # different data on each rank
        for _ in range(23):
            x = torch.randn(8, 6, generator=g)
            y = torch.randint(0, 2, (8,), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        torch.save(
            {"params": flat, "inner_step": opt.param_groups[0].get("inner_step")},
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["trsgd", "tradam", "tr-rmsprop"])
def test_ddp_ranks_end_identical(tmp_path, name):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_worker, args=(2, _free_port(), name, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(r0["params"], r1["params"])
    assert r0["inner_step"] == r1["inner_step"] == 3  # 23 steps, S = 10
    # and training really moved the weights (the ranks did not just stay at the init)
    torch.manual_seed(0)
    init = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    flat0 = torch.cat([p.detach().flatten() for p in init.parameters()])
    assert not torch.allclose(flat0, r0["params"])
