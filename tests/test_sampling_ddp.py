"""Samplers under 2 gloo processes: identical tables, disjoint slices covering the global batch,
a DDP model ending identical on both ranks and equal to a 1-process run on the same global
batches, consistent rejection of an update that is bad on one rank only, state round trip,
InfoBatch's shared plan (with an uneven final batch), pre-sample mode's scorer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from _dist import gloo_available, run_distributed
from tamegrad.distributed import DistContext
from tamegrad.sampling import InfoBatchSampler, PrioritySampler

N, B, STEPS_PER_EPOCH, EPOCHS = 64, 8, 5, 2
IB_B = 16  # InfoBatch: 65 = 4 * 16 + 1 leaves a final batch of 1 < world size


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, 4, generator=g), torch.randint(0, 3, (N,), generator=g)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3).double()


def _sampler(**kw) -> PrioritySampler:
    return PrioritySampler(N, B, eps=0.2, replacement=False, steps_per_epoch=STEPS_PER_EPOCH,
                           seed=3, **kw)


def _ib_losses(idx: torch.Tensor) -> torch.Tensor:
    return (idx.float() * 0.37) % 5


def _worker(rank: int, world: int, out: str) -> None:
    x, y = _data()
    model = _model()
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    s = _sampler()
    slices = []
    for epoch in range(EPOCHS):
        s.set_epoch(epoch)
        for idx, w in s:
            per_ex = F.cross_entropy(ddp(x[idx].double()), y[idx], reduction="none")
            opt.zero_grad()
            (w.double() * per_ex).mean().backward()
            opt.step()
            s.update(idx, per_ex.detach())
            slices.append((idx, w))
    res: dict = {"slices": slices, "params": [p.detach().clone() for p in model.parameters()],
                 "scores": s.scores.clone(), "seen": s.seen.clone(), "stats": s.stats()}

    # an update that is bad on rank 1 only: every rank rejects it, nothing is written anywhere
    before = s.scores.clone()
    bad = torch.tensor([1.0, 2.0]) if rank == 0 else torch.tensor([1.0, float("nan")])
    try:
        s.update(torch.tensor([0, 1]), bad)
        res["rejected"] = ""
    except ValueError as e:
        res["rejected"] = str(e)
    res["unchanged"] = torch.equal(before, s.scores)
    s.update(torch.tensor([rank]), torch.tensor([9.0]))  # still in step afterwards
    # more pairs than a slice (B/2 = 4) on rank 0: the second, padded exchange
    many = torch.arange(10, 16) if rank == 0 else torch.tensor([30])
    s.update(many, many.float() + 0.5)
    res["after"] = s.scores.clone()

    # state round trip under 2 ranks, mid-epoch
    s.set_epoch(EPOCHS)
    it = iter(s)
    for _ in range(2):
        idx, _w = next(it)
        s.update(idx, _ib_losses(idx))
    state = s.state_dict()
    nxt = []
    for idx, w in it:
        s.update(idx, _ib_losses(idx))
        nxt.append((idx, w))
    s2 = PrioritySampler(N, B, eps=0.2, replacement=False, steps_per_epoch=STEPS_PER_EPOCH,
                         seed=3)
    s2.load_state_dict(state)
    again = []
    for idx, w in s2:
        s2.update(idx, _ib_losses(idx))
        again.append((idx, w))
    res["round_trip"] = len(nxt) > 0 and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(nxt, again))

    # InfoBatch: N=65 leaves a final batch of 1 < world size in epoch 0 (merged into the last)
    ib = InfoBatchSampler(65, IB_B, epochs=4, seed=5)
    ib_slices = []
    for epoch in range(3):
        ib.set_epoch(epoch)
        ep = []
        for idx, w in ib:
            ib.update(idx, _ib_losses(idx))
            ep.append((idx, w))
        ib_slices.append(ep)
    res["ib"] = ib_slices
    res["ib_scores"] = ib.scores.clone()

    # pre-sample mode: the scorer sees this rank's share of the candidates
    ps = _sampler(presample=2, tau_threshold=0.0)
    sizes = []
    ps.set_scorer(lambda idx: (sizes.append(idx.numel()), _ib_losses(idx))[1])
    res["ps"] = [idx for idx, _ in ps]
    res["ps_sizes"] = sizes
    res["ps_stats"] = ps.stats()
    torch.save(res, f"{out}/r{rank}.pt")


def _single_process_run(slices: list) -> tuple[list, PrioritySampler]:
    """The 1-process reference: the same sampler (its own draws) and the recorded batches."""
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    s = _sampler()
    step = 0
    for epoch in range(EPOCHS):
        s.set_epoch(epoch)
        for idx, w in s:
            rec_idx = torch.cat([slices[0][step][0], slices[1][step][0]])
            rec_w = torch.cat([slices[0][step][1], slices[1][step][1]])
            assert torch.equal(idx, rec_idx) and torch.equal(w, rec_w)
            per_ex = F.cross_entropy(model(x[idx].double()), y[idx], reduction="none")
            opt.zero_grad()
            (w.double() * per_ex).mean().backward()
            opt.step()
            s.update(idx, per_ex.detach())
            step += 1
    return list(model.parameters()), s


@pytest.mark.skipif(not gloo_available(), reason="gloo not available")
def test_two_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    run_distributed(_worker, 2, str(tmp_path))
    r = [torch.load(tmp_path / f"r{k}.pt", weights_only=False) for k in (0, 1)]
    # identical tables
    assert torch.equal(r[0]["scores"], r[1]["scores"]) and torch.equal(r[0]["seen"], r[1]["seen"])
    # slices: disjoint, B/2 each, together the global batch
    slices = [r[0]["slices"], r[1]["slices"]]
    assert len(slices[0]) == len(slices[1]) == EPOCHS * STEPS_PER_EPOCH
    for (i0, _), (i1, _) in zip(*slices):
        assert i0.numel() == i1.numel() == B // 2
        assert not set(i0.tolist()) & set(i1.tolist())
    # parameters: identical on both ranks, equal to one process on the same global batches
    for p0, p1 in zip(r[0]["params"], r[1]["params"]):
        assert torch.equal(p0, p1)
    params, single = _single_process_run(slices)
    for p0, p in zip(r[0]["params"], params):
        assert torch.allclose(p0, p.detach(), atol=1e-6, rtol=0)
    assert torch.allclose(single.scores, r[0]["scores"], atol=1e-6)
    # statistics: bytes of one header row + B/2 (int32 index, float32 loss) rows per step
    st = r[0]["stats"]
    assert st["steps"] == STEPS_PER_EPOCH and st["bytes_sent_per_step"] == 8 + 8 * (B // 2)
    assert st["bytes_received_per_step"] == 2 * st["bytes_sent_per_step"]
    # a bad update on one rank is rejected on both, nothing written, ranks stay in step
    for k in (0, 1):
        assert "rank 1" in r[k]["rejected"] and "losses" in r[k]["rejected"]
        assert r[k]["unchanged"] and r[k]["round_trip"]
    assert torch.equal(r[0]["after"], r[1]["after"]) and r[0]["after"][:2].tolist() == [9.0, 9.0]
    assert r[0]["after"][10:16].tolist() == [k + 0.5 for k in range(10, 16)]
    assert r[0]["after"][30].item() == 30.5
    # InfoBatch: one shared plan; the slices match a 1-process sampler's global batches
    ib = InfoBatchSampler(65, IB_B, epochs=4, seed=5)
    assert torch.equal(r[0]["ib_scores"], r[1]["ib_scores"])
    f = torch.randn(65, generator=torch.Generator().manual_seed(1))
    for epoch in range(3):
        ib.set_epoch(epoch)
        ref = list(ib)
        for idx, _ in ref:
            ib.update(idx, _ib_losses(idx))
        got0, got1 = r[0]["ib"][epoch], r[1]["ib"][epoch]
        ref_idx = torch.cat([i for i, _ in ref])
        ref_w = torch.cat([w for _, w in ref])
        # same order of examples; batch boundaries equal except a merged final batch
        assert len(got0) == len(got1) in (len(ref), len(ref) - 1)
        pos = 0
        for (a, aw), (b, bw) in zip(got0, got1):
            gi = torch.cat([a, b])
            assert torch.equal(gi, ref_idx[pos : pos + gi.numel()])
            gw = ref_w[pos : pos + gi.numel()]
            pos += gi.numel()
            # DDP averages the two ranks' weighted means: that must be the global weighted mean
            ddp_mean = 0.5 * (float((aw * f[a]).mean()) + float((bw * f[b]).mean()))
            assert ddp_mean == pytest.approx(float((gw * f[gi]).mean()), rel=1e-5)
        assert pos == ref_idx.numel()
    assert r[0]["ib"][0][-1][0].numel() == 9  # the final batch of 17 = 16 + 1, split 9 / 8
    # pre-sample: every rank scored its half of B = 2b candidates; same global batches
    assert set(r[0]["ps_sizes"]) == set(r[1]["ps_sizes"]) == {B}
    assert r[0]["ps_stats"]["presampled_steps"] == STEPS_PER_EPOCH
    for a, b in zip(r[0]["ps"], r[1]["ps"]):
        assert a.numel() == b.numel() == B // 2


def test_settings_must_agree_between_ranks_is_checked_at_construction(tmp_path):
    """A one-process context skips the check (nothing to compare)."""
    s = PrioritySampler(10, 2, dist_context=DistContext.single())
    assert s.dist.world_size == 1
