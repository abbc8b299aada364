"""WTA-CRS / CRS / top-k linear layers: unbiasedness on every path, variance, exactness, memory.

Monte Carlo tests: the layer's weight gradient is drawn ``DRAWS`` times (float64, fixed seed)
and its mean must equal the exact ``dZ^T H`` within 5 standard errors measured from the draws,
elementwise. Each test also shows the bound has teeth: a biased alternative (top-k, or the
public code's winners-only path) falls outside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from tamegrad.estimators import ActivationMeter, convert, revert
from tamegrad.estimators._crs import select_rows, winner_count
from tamegrad.estimators.batch_context import batch_context, norm_cache
from tamegrad.estimators.wtacrs import BiasedEstimatorWarning, WTACRSLinear

DRAWS = 500
B, T, D_IN, D_OUT = 4, 16, 6, 5  # n = 64 rows, k = ceil(0.3 * 64) = 20


pytestmark = pytest.mark.usefixtures("one_thread")


def heavy_rows(shape: tuple[int, ...], gen: torch.Generator, sigma: float = 1.5) -> Tensor:
    """Gaussian rows times log-normal row scales: heavy-tailed row norms."""
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    scale = torch.exp(sigma * torch.randn(*shape[:-1], 1, generator=gen, dtype=torch.float64))
    return x * scale


def exact_grads(lin: nn.Linear, x: Tensor, go: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    xr = x.clone().requires_grad_()
    lin.zero_grad()
    lin(xr).backward(go)
    assert lin.weight.grad is not None and lin.bias is not None and lin.bias.grad is not None
    return lin.weight.grad.clone(), xr.grad.clone(), lin.bias.grad.clone()  # type: ignore[union-attr]


def make_layer(mode: str, keep_frac: float = 0.3, **kw: object) -> tuple[nn.Linear, WTACRSLinear]:
    torch.manual_seed(0)
    plain = nn.Linear(D_IN, D_OUT).double()
    layer = WTACRSLinear.from_linear(plain, keep_frac=keep_frac, mode=mode, **kw)  # type: ignore[arg-type]
    return plain, layer


def draw_grads(
    layer: WTACRSLinear, x: Tensor, go: Tensor, draws: int,
    prepare: Callable[[], None] | None = None,
) -> Tensor:
    """``draws`` weight-gradient estimates, each after ``prepare()`` (sets the cache state)."""
    model = nn.Sequential(layer)
    ex = torch.arange(x.shape[0])
    out = []
    for _ in range(draws):
        if prepare is not None:
            prepare()
        layer.weight.grad = None
        with batch_context(model, ex):
            y = model(x)
        y.backward(go)
        out.append(layer.weight.grad.clone())  # type: ignore[union-attr]
    return torch.stack(out)


def assert_unbiased(samples: Tensor, exact: Tensor) -> Tensor:
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    err = (mean - exact).abs()
    tol = 5 * se + 1e-9 * exact.abs().max()
    assert bool((err <= tol).all()), f"max z = {float((err / se.clamp_min(1e-300)).max()):.2f}"
    return se


def cache_state_after(layer: WTACRSLinear, x: Tensor, go: Tensor) -> dict:
    """The cache state after one visit of the batch with output gradient ``go``."""
    draw_grads(layer, x, go, 1)
    cache = layer.norm_cache
    assert cache is not None
    return cache.state_dict()


def loader(layer: WTACRSLinear, state: dict) -> Callable[[], None]:
    def prepare() -> None:
        assert layer.norm_cache is not None
        layer.norm_cache.load_state_dict(state)

    return prepare


# -- the sampler -------------------------------------------------------------------------------
def test_winner_count_matches_brute_force_and_is_zero_when_flat() -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        s = torch.exp(2.0 * torch.randn(50, generator=g, dtype=torch.float64))
        p = s / s.sum()
        k = int(torch.randint(2, 30, (1,), generator=g))
        srt = torch.sort(p, descending=True).values
        scores = [1.0 / k] + [float((1 - srt[:c].sum()) / (k - c)) for c in range(1, k)]
        best = min(range(k), key=lambda c: (scores[c], c))
        assert winner_count(srt, k) == best
    flat = torch.full((100,), 0.01, dtype=torch.float64)
    assert winner_count(flat, 30) == 0
    # one dominant row: a winner
    peaked = torch.cat([torch.tensor([0.9]), torch.full((99,), 0.1 / 99)]).double()
    assert winner_count(peaked, 30) >= 1


def test_select_rows_edge_cases() -> None:
    s = torch.tensor([0.0, 2.0, 0.0, 1.0], dtype=torch.float64)
    idx, w, _ = select_rows(s, 3)  # only 2 positive rows <= k: exact, zeros dropped
    assert sorted(idx.tolist()) == [1, 3] and torch.equal(w, torch.ones(2, dtype=torch.float64))
    # winners with all but a sliver of the mass still leave draws for the rest
    s = torch.cat([torch.tensor([1e12, 1e12]), torch.ones(30)]).double()
    idx, w, c = select_rows(s, 5)
    assert c == 2 and idx.numel() > 2 and bool((w[2:] > 1).all())
    with pytest.raises(ValueError, match="mode"):
        select_rows(s, 5, "bogus")  # type: ignore[arg-type]


# -- unbiasedness on every path -----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["wtacrs", "crs"])
def test_first_visit_input_norm_path_is_unbiased(mode: str) -> None:
    g = torch.Generator().manual_seed(2)
    x, go = heavy_rows((B, T, D_IN), g), heavy_rows((B, T, D_OUT), g)
    plain, layer = make_layer(mode)
    exact = exact_grads(plain, x, go)[0]
    empty = {"version": 1, "dtype": "bfloat16", "reserved": 0, "tables": {}}
    norm_cache(nn.Sequential(layer))
    samples = draw_grads(layer, x, go, DRAWS, loader(layer, empty))
    se = assert_unbiased(samples, exact)
    # teeth: the deterministic top-k ablation is outside the same bound
    if mode == "crs":
        with pytest.warns(BiasedEstimatorWarning):
            _, topk = make_layer("topk")
        biased = draw_grads(topk, x, go, 1)[0]
        assert bool(((biased - exact).abs() > 5 * se).any())


def test_cached_norms_path_unbiased_and_wtacrs_beats_crs_on_heavy_tails() -> None:
    g = torch.Generator().manual_seed(3)
    x, go = heavy_rows((B, T, D_IN), g), heavy_rows((B, T, D_OUT), g)
    variances = {}
    for mode in ("wtacrs", "crs"):
        plain, layer = make_layer(mode)
        exact = exact_grads(plain, x, go)[0]
        state = cache_state_after(layer, x, go)
        samples = draw_grads(layer, x, go, DRAWS, loader(layer, state))
        assert_unbiased(samples, exact)
        variances[mode] = float(samples.var(0).sum())
        if mode == "wtacrs":
            assert layer.last_winners >= 1  # heavy tails: winners are used
    # measured ratio ~0.02; a variance from 500 draws has a relative standard error of ~6%
    assert variances["wtacrs"] < 0.5 * variances["crs"], variances


@pytest.mark.parametrize("mode", ["wtacrs", "crs"])
def test_stale_and_partial_cache_path_is_unbiased(mode: str) -> None:
    """Half the examples seen before with *other* gradients (some rows 0 then), half never."""
    g = torch.Generator().manual_seed(4)
    x, go = heavy_rows((B, T, D_IN), g), heavy_rows((B, T, D_OUT), g)
    old = heavy_rows((B, T, D_OUT), g)
    old[:, ::3] = 0.0  # rows whose gradient was exactly 0 on the last visit
    plain, layer = make_layer(mode)
    exact = exact_grads(plain, x, go)[0]
    state = cache_state_after(layer, x, old)
    for t in state["tables"].values():
        t[B // 2 :] = float("nan")  # the second half of the batch: never seen
    samples = draw_grads(layer, x, go, DRAWS, loader(layer, state))
    assert_unbiased(samples, exact)


@pytest.mark.parametrize("mode", ["wtacrs", "crs"])
def test_winners_holding_almost_all_mass_stay_unbiased(mode: str) -> None:
    g = torch.Generator().manual_seed(5)
    x, go = heavy_rows((B, T, D_IN), g, 0.3), heavy_rows((B, T, D_OUT), g, 0.3)
    x[0, :3] *= 1e5  # three rows hold > 99.9% of the probability mass
    plain, layer = make_layer(mode, cache=False)
    exact = exact_grads(plain, x, go)[0]
    samples = draw_grads(layer, x, go, DRAWS)
    se = assert_unbiased(samples, exact)
    if mode == "wtacrs":
        assert 3 <= layer.last_winners < layer.num_kept(B * T)
        hn = x.reshape(-1, D_IN).norm(dim=1)
        top3 = torch.topk(hn, 3).values.sum() / hn.sum()
        assert float(top3) > 0.999
        # teeth: the public code's "long tail" path keeps the winners only
        x2, go2 = x.reshape(-1, D_IN), go.reshape(-1, D_OUT)
        winners_only = go2[0:3].t() @ x2[0:3]
        assert bool(((winners_only - exact).abs() > 5 * se).any())


def test_flat_mass_picks_no_winners_and_is_unbiased() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(B, T, D_IN, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)  # every row norm 1: flat probabilities
    go = torch.randn(B, T, D_OUT, generator=g, dtype=torch.float64)
    plain, layer = make_layer("wtacrs", cache=False)
    exact = exact_grads(plain, x, go)[0]
    samples = draw_grads(layer, x, go, DRAWS)
    assert layer.last_winners == 0
    assert_unbiased(samples, exact)


# -- exact parts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 16, 6), (64, 6), (2, 3, 11, 6), (5, 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_input_grad_bit_identical_and_bias_grad_exact(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(7)
    plain = nn.Linear(6, 5, bias=bias)
    layer = WTACRSLinear.from_linear(nn.Linear(6, 5, bias=bias), cache=False)
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(*shape)
    go = torch.randn(*shape[:-1], 5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), layer(xb)
    assert torch.equal(ya, yb)
    ya.backward(go)
    yb.backward(go)
    assert torch.equal(xa.grad, xb.grad)  # type: ignore[arg-type]
    if bias:
        torch.testing.assert_close(layer.bias.grad, plain.bias.grad, rtol=1e-6, atol=1e-6)
    if math.prod(shape[:-1]) <= 10:  # fewer rows than min_rows: everything kept, exact
        assert layer.last_winners == -1
        torch.testing.assert_close(layer.weight.grad, plain.weight.grad, rtol=1e-6, atol=1e-6)


def test_bf16_autocast_matches_the_plain_layer() -> None:
    torch.manual_seed(12)
    plain = nn.Linear(6, 5)
    layer = WTACRSLinear.from_linear(nn.Linear(6, 5), cache=False)
    layer.load_state_dict(plain.state_dict())
    x = torch.randn(4, 16, 6)
    go = torch.randn(4, 16, 5, dtype=torch.bfloat16)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = plain(xa), layer(xb)
    assert yb.dtype == torch.bfloat16 and torch.equal(ya, yb)
    ya.backward(go)
    yb.backward(go)
    assert torch.equal(xa.grad, xb.grad)  # type: ignore[arg-type]
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32
    assert layer.last_winners >= 0  # the sampled path ran


def test_eval_no_grad_and_frozen_weight_are_plain() -> None:
    torch.manual_seed(8)
    layer = WTACRSLinear(6, 5, cache=True)  # no batch context needed on these paths
    x = torch.randn(4, 16, 6, requires_grad=True)
    ref = nn.functional.linear(x, layer.weight, layer.bias)
    layer.eval()
    with ActivationMeter(layer) as m:
        y = layer(x)
    assert torch.equal(y, ref) and m.report().saved_bytes == x.numel() * 4  # as nn.Linear
    layer.train()
    with torch.no_grad(), ActivationMeter(layer) as m:
        assert torch.equal(layer(x), ref)
    assert m.report().saved_bytes == 0
    layer.weight.requires_grad_(False)
    assert torch.equal(layer(x), ref)  # frozen: no context needed, nothing sampled


# -- memory -----------------------------------------------------------------------------------
def test_saved_bytes_at_keep_frac_03_within_bound() -> None:
    torch.manual_seed(9)
    b, t, d = 8, 64, 64
    n = b * t
    layer = WTACRSLinear(d, 32, keep_frac=0.3)
    model = nn.Sequential(layer)
    x = torch.randn(b, t, d, requires_grad=True)
    with ActivationMeter(model) as m, batch_context(model, torch.arange(b)):
        y = model(x)
    k = layer.num_kept(n)
    assert k == math.ceil(0.3 * n)
    # kept rows (float32) + int64 index + float32 weight per row, + the B example indices
    bound = k * (d * 4 + 8 + 4) + 8 * b
    saved = m.report().saved_bytes
    assert 0.3 * n * d * 4 * 0.5 < saved <= bound, (saved, bound)
    assert saved / (n * d * 4) <= 0.3 * (1 + 12 / (d * 4)) + 8 * b / (n * d * 4)
    y.sum().backward()
    # the cache table is the layer's persistent extra memory, reported by the meter
    with ActivationMeter(model) as m2, batch_context(model, torch.arange(b)):
        model(x)
    assert m2.report().extra_bytes == layer.estimator_extra_bytes() == b * t * 2


# -- options, conversion, bad input ----------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.3"])
def test_invalid_keep_frac_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="keep_frac"):
        WTACRSLinear(4, 4, keep_frac=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep_frac"):
        convert(nn.Sequential(nn.Linear(4, 4)), "wtacrs", include="0", keep_frac=bad)


def test_invalid_options_raise() -> None:
    with pytest.raises(ValueError, match="min_rows"):
        WTACRSLinear(4, 4, min_rows=0)
    with pytest.raises(ValueError, match="missing_context"):
        WTACRSLinear(4, 4, missing_context="ignore")
    with pytest.raises(ValueError, match="norm_floor"):
        WTACRSLinear(4, 4, norm_floor=0.0)
    with pytest.raises(ValueError, match="mode"):
        WTACRSLinear(4, 4, mode="random")  # type: ignore[arg-type]


def test_missing_batch_context_is_an_error_or_the_documented_fallback() -> None:
    torch.manual_seed(10)
    x = torch.randn(4, 16, 6, requires_grad=True)
    model = convert(nn.Sequential(nn.Linear(6, 5)), "wtacrs", include="0")
    with pytest.raises(RuntimeError, match="batch context"):
        model(x)
    fallback = convert(
        nn.Sequential(nn.Linear(6, 5)), "wtacrs", include="0", missing_context="input_norm"
    )
    fallback(x).sum().backward()  # first-visit scores, nothing recorded
    cache = norm_cache(fallback)
    assert cache is not None and cache.layers() == []
    no_cache = convert(nn.Sequential(nn.Linear(6, 5)), "crs", include="0", cache=False)
    no_cache(x).sum().backward()
    assert norm_cache(no_cache) is None
    with pytest.raises(ValueError, match="batch"), batch_context(model, [0, 1, 2]):
        model(x)  # 3 example indices for a batch of 4


def test_topk_warns_and_is_biased() -> None:
    with pytest.warns(BiasedEstimatorWarning, match="BIASED"):
        model = convert(nn.Sequential(nn.Linear(6, 5)), "topk", include="0", cache=False)
    assert model[0].mode == "topk"


def test_convert_revert_round_trip_keeps_parameters_and_outputs() -> None:
    torch.manual_seed(11)
    base = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    x = torch.randn(5, 6)
    ref = base(x)
    params = [id(p) for p in base.parameters()]
    model = convert(base, "wtacrs", include=["0", "2"], keep_frac=0.5)
    assert isinstance(model[0], WTACRSLinear) and isinstance(model[2], WTACRSLinear)
    assert [id(p) for p in model.parameters()] == params
    assert model.state_dict().keys() == sd.keys()
    model.eval()
    assert torch.equal(model(x), ref)
    back = revert(model)
    assert type(back[0]) is nn.Linear and not hasattr(back[0], "keep_frac")
    for k, v in back.state_dict().items():
        assert torch.equal(v, sd[k])
