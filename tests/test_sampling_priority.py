"""PrioritySampler: unbiased weights (Monte Carlo, bounds from the measured standard error),
the weight bound 1/eps, draw frequencies, pre-sample switching, state round trip, bad input."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from tamegrad.sampling import PrioritySampler, ce_grad_norm_proxy, slice_for_rank, tau_estimate

N, B = 200, 16


def _table() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scores = torch.exp(1.5 * torch.randn(N, generator=g))
    # a per-example quantity correlated with the scores, so prioritisation without weights is
    # visibly biased
    f = scores * (1.0 + 0.3 * torch.randn(N, generator=g)) + 0.5
    return scores, f


def _weighted_batch_means(sampler: PrioritySampler, f: torch.Tensor) -> torch.Tensor:
    return torch.stack([(w.double() * f[idx].double()).mean() for idx, w in sampler])


def _mc_gap(sampler: PrioritySampler, f: torch.Tensor) -> tuple[float, float]:
    m = _weighted_batch_means(sampler, f)
    se = float(m.std()) / math.sqrt(m.numel())
    return abs(float(m.mean()) - float(f.double().mean())), se


@pytest.mark.parametrize(
    "kwargs",
    [
        {"replacement": True},
        {"replacement": False},
        {"replacement": True, "power": 0.5},
        {"replacement": False, "power": 2.0, "eps": 0.05},
    ],
)
def test_weighted_batch_mean_is_unbiased_for_a_fixed_table(kwargs):
    scores, f = _table()
    s = PrioritySampler(N, B, steps_per_epoch=3000, seed=1, **{"eps": 0.1, **kwargs})
    s.update(torch.arange(N), scores)
    gap, se = _mc_gap(s, f)
    assert gap <= 5 * se, (gap, se)


def test_pure_prioritisation_is_detectably_biased():
    """The same Monte Carlo check fails without the weights: the test has power."""
    scores, f = _table()
    s = PrioritySampler(N, B, eps=0.1, unbiased=False, steps_per_epoch=3000, seed=1)
    s.update(torch.arange(N), scores)
    gap, se = _mc_gap(s, f)
    assert gap > 20 * se, (gap, se)
    assert all(bool((w == 1).all()) for _, w in PrioritySampler(N, B, unbiased=False))


def test_presample_mode_is_unbiased():
    scores, f = _table()
    s = PrioritySampler(N, B, eps=0.1, presample=3, tau_threshold=0.0, steps_per_epoch=2000,
                        seed=2)
    calls = []

    def scorer(idx: torch.Tensor) -> torch.Tensor:
        calls.append(idx.numel())
        return scores[idx]

    s.set_scorer(scorer)
    gap, se = _mc_gap(s, f)
    assert gap <= 5 * se, (gap, se)
    assert set(calls) == {3 * B} and s.stats()["presampled_steps"] == 2000


def test_draw_frequencies_match_the_probabilities():
    scores, _ = _table()
    t = 4000
    for replacement in (True, False):
        s = PrioritySampler(N, B, eps=0.1, replacement=replacement, steps_per_epoch=t, seed=3)
        s.update(torch.arange(N), scores)
        p = s.probabilities()
        counts = torch.zeros(N, dtype=torch.float64)
        for idx, _ in s:
            counts.index_add_(0, idx, torch.ones(idx.numel(), dtype=torch.float64))
        if replacement:
            expect, se = p, (p * (1 - p) / (t * B)).sqrt()
            freq = counts / (t * B)
        else:  # inclusion probabilities pi = min(1, c p) with sum pi = B, c by bisection
            lo, hi = float(B), float(B) / float(p.min())
            for _ in range(200):
                c = 0.5 * (lo + hi)
                lo, hi = (c, hi) if float(p.mul(c).clamp(max=1).sum()) < B else (lo, c)
            pi = p.mul(0.5 * (lo + hi)).clamp(max=1.0)
            assert bool((pi == 1).any())  # this table exercises the capping
            expect, se = pi, (pi * (1 - pi) / t).sqrt()
            freq = counts / t
        assert bool(((freq - expect).abs() <= 5 * se + 1e-12).all())


@pytest.mark.parametrize("replacement", [True, False])
def test_no_weight_exceeds_one_over_eps(replacement):
    eps = 0.1
    s = PrioritySampler(N, B, eps=eps, replacement=replacement, steps_per_epoch=300, seed=4)
    extreme = torch.zeros(N)
    extreme[:3] = 1e6
    s.update(torch.arange(N), extreme)
    w = torch.cat([w for _, w in s])
    assert float(w.max()) <= (1 / eps) * (1 + 1e-5)
    if replacement:  # the bound is reached by the floor-only examples
        assert float(w.max()) >= 0.99 / eps
    assert s.stats()["weight_max"] == pytest.approx(float(w.max()))


def test_unseen_examples_start_at_the_current_maximum():
    s = PrioritySampler(10, 2, eps=0.5)
    assert torch.allclose(s.probabilities(), torch.full((10,), 0.1, dtype=torch.float64))
    s.update(torch.tensor([0, 1, 2]), torch.tensor([1.0, 4.0, 2.0]))
    p = s.probabilities()
    assert torch.allclose(p[3:], p[1].expand(7)) and bool(p[0] < p[2] < p[1])
    s.update(torch.tensor([1]), torch.tensor([0.5]))  # the max moves down with the table
    p = s.probabilities()
    assert torch.allclose(p[3:], p[2].expand(7))


def test_presample_switches_on_only_when_tau_pays():
    flat, skewed = torch.ones(N), torch.zeros(N)
    skewed[:5] = 100.0
    for table, expect_on in ((flat, False), (skewed, True)):
        s = PrioritySampler(N, B, presample=3, steps_per_epoch=40, seed=5)
        assert s.tau_threshold == pytest.approx(2.0)  # (B + 3b) / (3b) with B = 3b
        s.set_scorer(lambda idx, t=table: t[idx])
        uniform_weights = []
        for idx, w in s:
            s.update(idx, table[idx])
            if s.stats()["presampled_steps"] == 0:
                uniform_weights.append(w)
        st = s.stats()
        assert (st["presampled_steps"] > 0) == expect_on, st
        assert all(bool((w == 1).all()) for w in uniform_weights)
        assert (st["scoring_seconds"] > 0) == expect_on


def test_tau_estimate_matches_the_spec_formula():
    s = torch.tensor([1.0, 2.0, 3.0, 10.0])
    g, u = s / s.sum(), torch.full((4,), 0.25)
    spec = 1 / math.sqrt(1 - float((g - u).square().sum() / g.square().sum()))
    assert tau_estimate(s) == pytest.approx(spec)
    assert tau_estimate(torch.ones(5)) == pytest.approx(1.0)


def test_state_dict_round_trip_gives_identical_next_batches():
    for kwargs in ({}, {"replacement": False}, {"presample": 2, "tau_threshold": 1.0}):
        def losses(idx: torch.Tensor) -> torch.Tensor:
            return (idx.float() * 0.37) % 5

        a = PrioritySampler(N, B, seed=6, **kwargs)
        a.set_scorer(losses)
        it = iter(a)
        for _ in range(5):
            idx, _w = next(it)
            a.update(idx, losses(idx))
        buf = io.BytesIO()
        torch.save(a.state_dict(), buf)
        nxt = []
        for _ in range(4):
            idx, w = next(it)
            a.update(idx, losses(idx))
            nxt.append((idx, w))
        b = PrioritySampler(N, B, seed=99, **kwargs)  # the seed comes from the state
        b.set_scorer(losses)
        buf.seek(0)
        b.load_state_dict(torch.load(buf, weights_only=False))
        b.set_epoch(0)  # same epoch: a no-op, the run continues mid-epoch
        it_b = iter(b)
        for idx_a, w_a in nxt:
            idx, w = next(it_b)
            b.update(idx, losses(idx))
            assert torch.equal(idx, idx_a) and torch.equal(w, w_a)
        assert torch.equal(a.scores, b.scores)


def test_epochs_length_and_stats_reset():
    s = PrioritySampler(100, 32)
    assert len(s) == 4 and s.total_steps(3) == 12
    batches = list(s)
    assert len(batches) == 4 and all(i.dtype == torch.int64 and w.dtype == torch.float32
                                     for i, w in batches)
    st = s.stats()
    assert st["steps"] == 4 and 0 < st["distinct_examples"] <= 100
    assert st["bookkeeping_seconds"] > 0 and st["bytes_sent"] == 0
    assert list(s) == []  # the epoch is used up
    s.set_epoch(1)
    assert s.stats()["steps"] == 0 and len(list(s)) == 4
    assert s.epoch_progress() == pytest.approx(2.0)


def test_ce_grad_norm_proxy_is_the_logit_gradient_norm():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (8,), generator=g)
    F.cross_entropy(z, y, reduction="sum").backward()
    assert torch.allclose(ce_grad_norm_proxy(z, y), z.grad.norm(dim=1), atol=1e-6)
    s = PrioritySampler(8, 2, score="grad_norm")
    assert torch.allclose(s.score_batch(torch.zeros(8), z, y), z.grad.norm(dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="targets"):
        ce_grad_norm_proxy(z, y[:3])
    with pytest.raises(ValueError, match="targets"):
        ce_grad_norm_proxy(z, y + 5)


def test_slice_for_rank_keeps_ddp_average_equal_to_the_global_mean():
    idx = torch.arange(7)
    w = torch.rand(7, generator=torch.Generator().manual_seed(1))
    f = torch.randn(7, generator=torch.Generator().manual_seed(2))
    parts = [slice_for_rank(idx, w, r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), idx)
    ddp_mean = sum(float((pw * f[pi]).mean()) for pi, pw in parts) / 3
    assert ddp_mean == pytest.approx(float((w * f).mean()), rel=1e-6)
    with pytest.raises(ValueError):
        slice_for_rank(idx[:2], w[:2], 0, 3)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((0, 1), {}, "num_samples"),
        ((10, 0), {}, "batch_size"),
        ((10, 11), {"replacement": False}, "batch_size"),
        ((10, 2), {"eps": 0.0}, "eps"),
        ((10, 2), {"eps": -0.1}, "eps"),
        ((10, 2), {"eps": 1.5}, "eps"),
        ((10, 2), {"eps": float("nan")}, "eps"),
        ((10, 2), {"power": -1.0}, "power"),
        ((10, 2), {"presample": 1}, "presample"),
        ((10, 4), {"presample": 3, "replacement": False}, "presample"),
        ((10, 2), {"score": "margin"}, "score"),
        ((10, 2), {"tau_momentum": 1.0}, "tau_momentum"),
        ((10, 2), {"unbiased": 1}, "unbiased"),
    ],
)
def test_bad_settings_raise_naming_the_parameter(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        PrioritySampler(*args, **kwargs)


@pytest.mark.parametrize(
    ("indices", "losses", "name"),
    [
        ([0, 1, 2], [1.0, -0.5, 1.0], "losses"),
        ([0, 1, 2], [1.0, float("nan"), 1.0], "losses"),
        ([0, 1, 2], [1.0, float("inf"), 1.0], "losses"),
        ([0, 1, -1], [1.0, 1.0, 1.0], "indices"),
        ([0, 1, 10], [1.0, 1.0, 1.0], "indices"),
        ([0, 1], [1.0, 1.0, 1.0], "indices and losses"),
        ([0.0, 1.0], [1.0, 1.0], "indices"),
    ],
)
def test_rejected_update_writes_nothing(indices, losses, name):
    s = PrioritySampler(10, 2)
    s.update(torch.tensor([5, 6]), torch.tensor([3.0, 4.0]))
    scores, seen = s.scores.clone(), s.seen.clone()
    with pytest.raises(ValueError, match=name):
        s.update(torch.tensor(indices), torch.tensor(losses))
    assert torch.equal(s.scores, scores) and torch.equal(s.seen, seen)


def test_load_state_dict_checks_the_shape_of_the_run():
    a = PrioritySampler(10, 2)
    with pytest.raises(ValueError, match="num_samples"):
        PrioritySampler(11, 2).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="batch_size"):
        PrioritySampler(10, 5).load_state_dict(a.state_dict())


def test_presample_without_scorer_and_bad_scorer_output():
    s = PrioritySampler(50, 4, presample=2, tau_threshold=0.0)
    with pytest.raises(RuntimeError, match="scorer"):
        next(iter(s))
    s.set_scorer(lambda idx: -torch.ones(idx.numel()))
    scores = s.scores.clone()
    with pytest.raises(ValueError, match="scorer"):
        next(iter(s))
    assert torch.equal(s.scores, scores)
