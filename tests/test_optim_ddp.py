"""TR optimizers under DistributedDataParallel: 2 CPU processes, gloo backend."""

from __future__ import annotations

import pytest
import torch

from _dist import gloo_available, run_distributed


def _worker(rank: int, world: int, name: str, out: str) -> None:
    from tamegrad.optim import create

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


@pytest.mark.skipif(not gloo_available(), reason="torch.distributed with gloo is not available")
@pytest.mark.parametrize("name", ["trsgd", "tradam", "tr-rmsprop"])
def test_ddp_ranks_end_identical(tmp_path, name):
    run_distributed(_worker, 2, name, str(tmp_path))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(r0["params"], r1["params"])
    assert r0["inner_step"] == r1["inner_step"] == 3  # 23 steps, S = 10
    # and training really moved the weights (the ranks did not just stay at the init)
    torch.manual_seed(0)
    init = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    flat0 = torch.cat([p.detach().flatten() for p in init.parameters()])
    assert not torch.allclose(flat0, r0["params"])
