"""InfoBatchSampler: the epoch plan (who is pruned, the rescaling), the announced epoch lengths,
annealing, the unbiased epoch gradient (Monte Carlo, measured standard error), resume, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from tamegrad.sampling import InfoBatchSampler


def _epoch(s: InfoBatchSampler) -> tuple[torch.Tensor, torch.Tensor, int]:
    parts = list(s)
    idx = torch.cat([p[0] for p in parts])
    w = torch.cat([p[1] for p in parts])
    return idx, w, len(parts)


def test_first_epoch_is_the_full_data_with_unit_weights():
    s = InfoBatchSampler(100, 16, epochs=4)
    idx, w, nb = _epoch(s)
    assert torch.equal(idx.sort().values, torch.arange(100)) and bool((w == 1).all())
    assert nb == 7 == s.batches_in_epoch(0)


def test_plan_prunes_below_mean_and_rescales_the_kept():
    n = 100
    losses = torch.arange(n, dtype=torch.float32)  # mean 49.5: 0..49 are well learned
    s = InfoBatchSampler(n, 10, epochs=8, prune_frac=0.3, seed=1)
    s.update(torch.arange(n), losses)
    predicted = s.batches_in_epoch(1)
    s.set_epoch(1)
    idx, w, nb = _epoch(s)
    assert nb == predicted == s.batches_in_epoch(1)
    m, d = 50, 15
    assert idx.numel() == n - d and idx.unique().numel() == n - d
    assert bool((idx >= 50).sum() == 50)  # every above-mean example is kept
    low = idx < 50
    assert torch.allclose(w[low], torch.full((m - d,), m / (m - d)))
    assert bool((w[~low] == 1).all())
    st = s.stats()
    assert (st["well_learned"], st["pruned"], st["kept"]) == (m, d, n - d)
    assert st["weight_max"] == pytest.approx(m / (m - d))


def test_annealing_epochs_use_the_full_data_and_lengths_add_up():
    n, epochs = 64, 8  # anneal_frac 0.125: the last epoch is on full data
    s = InfoBatchSampler(n, 8, epochs=epochs, seed=2)
    assert s.prune_until == 7
    lengths = []
    for e in range(epochs):
        s.set_epoch(e)
        ahead = s.batches_in_epoch(e)
        idx, w, nb = _epoch(s)
        assert nb == ahead
        lengths.append(nb)
        s.update(idx, (idx.float() * 0.61) % 3)
        if e in (0, epochs - 1):
            assert idx.numel() == n and bool((w == 1).all())
        else:
            assert idx.numel() < n
    assert s.total_steps() == sum(lengths) == s.total_steps(epochs)
    assert s.batches_in_epoch(epochs + 3) == 8  # beyond the run: no pruning


def test_future_epoch_length_is_predicted_from_the_current_table():
    s = InfoBatchSampler(40, 8, epochs=10, prune_frac=0.5)
    assert s.batches_in_epoch(3) == 5  # nothing scored: full data
    s.update(torch.arange(40), torch.arange(40, dtype=torch.float32))
    assert s.batches_in_epoch(3) == math.ceil((40 - 10) / 8)
    assert s.batches_in_epoch(9) == 5  # annealing


def test_epoch_gradient_is_unbiased():
    """E[sum_kept w_i g_i] = sum_all g_i, elementwise within 5 measured standard errors; the
    same sums without the rescaling miss by far more (the test has power)."""
    n, d, reps = 60, 3, 600
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(n, d, generator=gen, dtype=torch.float64) + 1.0
    losses = torch.rand(n, generator=gen)
    s = InfoBatchSampler(n, 16, epochs=10**6, prune_frac=0.6, anneal_frac=0.0, seed=3)
    s.update(torch.arange(n), losses)
    sums, plain = [], []
    for e in range(1, reps + 1):
        s.set_epoch(e)
        idx, w, _ = _epoch(s)
        sums.append((w.double()[:, None] * g[idx]).sum(0))
        plain.append(g[idx].sum(0))
    est, raw = torch.stack(sums), torch.stack(plain)
    full = g.sum(0)
    se = est.std(0) / math.sqrt(reps)
    assert bool(((est.mean(0) - full).abs() <= 5 * se).all()), (est.mean(0), full, se)
    se_raw = raw.std(0) / math.sqrt(reps)
    assert bool(((raw.mean(0) - full).abs() > 20 * se_raw.clamp(min=1e-3)).all())


def test_resume_mid_epoch_replays_the_plan():
    def losses(idx: torch.Tensor) -> torch.Tensor:
        return (idx.float() * 0.37) % 5

    a = InfoBatchSampler(90, 8, epochs=5, seed=4)
    for e in range(2):
        a.set_epoch(e)
        for idx, _ in a:
            a.update(idx, losses(idx))
    a.set_epoch(2)
    it = iter(a)
    for _ in range(3):
        idx, _ = next(it)
        a.update(idx, losses(idx))
    state = a.state_dict()
    rest = list(it)
    b = InfoBatchSampler(90, 8, epochs=5, seed=0)
    b.load_state_dict(state)
    b.set_epoch(2)
    again = list(b)
    assert len(again) == len(rest) > 0
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(rest, again))
    assert b.batches_in_epoch(1) == a.batches_in_epoch(1)  # history travels with the state


def test_drop_last_drops_the_partial_batch():
    s = InfoBatchSampler(50, 16, epochs=2, drop_last=True)
    idx, _, nb = _epoch(s)
    assert nb == 3 and idx.numel() == 48


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"prune_frac": 1.0}, "prune_frac"),
        ({"prune_frac": -0.1}, "prune_frac"),
        ({"prune_frac": float("nan")}, "prune_frac"),
        ({"anneal_frac": 1.5}, "anneal_frac"),
        ({"drop_last": "yes"}, "drop_last"),
    ],
)
def test_bad_settings(kwargs, name):
    args = {"num_samples": 20, "batch_size": 4, "epochs": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        InfoBatchSampler(**args)


def test_rejected_update_writes_nothing():
    s = InfoBatchSampler(10, 2, epochs=2)
    s.update(torch.tensor([1]), torch.tensor([2.0]))
    scores, seen = s.scores.clone(), s.seen.clone()
    for idx, val in (([0, 3], [1.0, float("nan")]), ([0, 10], [1.0, 1.0]), ([2], [-1.0])):
        with pytest.raises(ValueError, match=r"losses|indices"):
            s.update(torch.tensor(idx), torch.tensor(val))
        assert torch.equal(s.scores, scores) and torch.equal(s.seen, seen)
    with pytest.raises(ValueError, match="kind"):
        s.load_state_dict({"kind": "priority"})
