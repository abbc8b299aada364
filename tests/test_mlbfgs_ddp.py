"""mL-BFGS over 2 gloo processes: blocks spread over ranks, same update as 1 process, bit for bit.

Every rank computes the gradient of the same global batch (what DDP's all-reduce provides, up to
its rounding), so any difference between the 1- and 2-process parameters comes from the
optimizer's distribution of blocks alone; the bar is bitwise equality (float32, one thread).
One spawn runs every scenario to keep the test fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from _dist import gloo_available, run_distributed
from tamegrad.optim import MLBFGS

STEPS, CUT = 16, 11  # CUT: mid-period (T = 3) checkpoint


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(8, 24)
        self.unused = nn.Linear(24, 24)  # never called: its grads stay None
        self.fc2 = nn.Linear(24, 24)
        self.fc3 = nn.Linear(24, 24)
        self.fc4 = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc1(x))
        h = torch.tanh(self.fc2(h))
        return self.fc4(torch.tanh(self.fc3(h)))


def _opt(net: _Net, scenario: str) -> MLBFGS:
    kw: dict[str, Any] = {"lr": 0.05, "weight_decay": 1e-3, "update_period": 3,
                          "avg_decay": 0.9, "history_size": 4}
    if scenario == "auto":
        return MLBFGS(net.parameters(), min_block_numel=100, **kw)
    if scenario == "normalize":
        return MLBFGS(net.parameters(), min_block_numel=100, normalize=True, **kw)
    if scenario == "one_block":  # more ranks than blocks; the other layers: SGD momentum
        return MLBFGS(net.parameters(), blocks=[[net.fc2.weight, net.fc2.bias]], **kw)
    # a block whose parameters never get a gradient, next to real ones
    blocks = [[net.unused.weight, net.unused.bias], [net.fc1.weight],
              [net.fc3.weight, net.fc3.bias]]
    return MLBFGS(net.parameters(), blocks=blocks, **kw)


def _batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + t)
    return torch.randn(32, 8, generator=gen), torch.randint(0, 4, (32,), generator=gen)


def _steps(net: _Net, opt: MLBFGS, start: int, stop: int) -> None:
    for t in range(start, stop):
        x, y = _batch(t)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def _flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def _run(scenario: str, out: Path, rank: int) -> dict[str, Any]:
    net = _Net()
    opt = _opt(net, scenario)
    _steps(net, opt, 0, CUT)
    res: dict[str, Any] = {"owners": [b.owner for b in opt.blocks],
                           "per_rank": opt.state_is_per_rank}
    if scenario == "auto":
        torch.save(opt.state_dict(), out / f"shard{rank}.pt")
        full = opt.consolidate_state_dict(to=0)
        if full is not None:
            torch.save(full, out / "full.pt")
        res["cut_params"] = {k: v.clone() for k, v in net.state_dict().items()}
    _steps(net, opt, CUT, STEPS)
    res["params"] = _flat(net)
    res["history_bytes"] = opt.history_bytes()
    if scenario == "auto":  # resume from this rank's own shard
        net2 = _Net()
        net2.load_state_dict(res["cut_params"])
        opt2 = _opt(net2, scenario)
        opt2.load_state_dict(torch.load(out / f"shard{rank}.pt", weights_only=True))
        _steps(net2, opt2, CUT, STEPS)
        res["resumed"] = _flat(net2)
    return res


SCENARIOS = ("auto", "normalize", "one_block", "dead_block")


def _worker(rank: int, world: int, out: str) -> None:
    results = {s: _run(s, Path(out), rank) for s in SCENARIOS}
    torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("mlbfgs_dist")
    run_distributed(_worker, 2, str(out))
    return out


def test_two_ranks_equal_one_rank_bitwise_and_split_the_history(dist_dir, tmp_path, one_thread):
    # one thread here, as in the workers: the same reduction order
    ranks = [torch.load(dist_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = {s: _run(s, tmp_path, 0) for s in SCENARIOS}
    for s in SCENARIOS:
        for r in (0, 1):
            assert torch.equal(ranks[r][s]["params"], single[s]["params"]), (s, r)
    assert ranks[0]["auto"]["per_rank"] and not single["auto"]["per_rank"]
    # the blocks really were spread, and a rank with no block still took part
    assert set(ranks[0]["auto"]["owners"]) == {0, 1}
    assert ranks[0]["one_block"]["owners"] == [0] and ranks[1]["one_block"]["history_bytes"] == 0
    # history memory: split between the ranks, about half each
    total = single["auto"]["history_bytes"]
    per_rank = [ranks[r]["auto"]["history_bytes"] for r in (0, 1)]
    # (5 blocks of 600, 600, 600, 192, 124 elements: 1200 vs 916 elements of history per rank)
    assert sum(per_rank) == total and max(per_rank) <= 0.6 * total, (per_rank, total)
    # resume from per-rank shards: the same trajectory
    for r in (0, 1):
        assert torch.equal(ranks[r]["auto"]["resumed"], single["auto"]["params"])


def test_consolidated_state_reshards_to_one_process_and_shards_are_refused(dist_dir, one_thread):
    cut = torch.load(dist_dir / "rank0.pt", weights_only=True)["auto"]["cut_params"]
    full = torch.load(dist_dir / "full.pt", weights_only=True)
    assert full["mlbfgs"]["layout"] == "full" and full["mlbfgs"]["world_size"] == 2
    ref_net = _Net()
    ref_opt = _opt(ref_net, "auto")
    _steps(ref_net, ref_opt, 0, STEPS)
    net = _Net()
    net.load_state_dict(cut)
    opt = _opt(net, "auto")
    opt.load_state_dict(full)  # world size 2 -> 1: this process keeps every block
    _steps(net, opt, CUT, STEPS)
    assert torch.equal(_flat(net), _flat(ref_net))
    assert opt.history_bytes() == ref_opt.history_bytes()
    with pytest.raises(ValueError, match="shard saved by rank 1 of 2"):
        _opt(_Net(), "auto").load_state_dict(
            torch.load(dist_dir / "shard1.pt", weights_only=True))
