"""ActivationMeter: storage-deduplicated saved-tensor bytes, exclusions, protocols, batch search."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tamegrad.estimators import (
    ActivationMeter,
    RADLinear,
    largest_batch_that_fits,
    measure_activation_bytes,
    note_saved_bytes,
)


class _KeepInts(torch.autograd.Function):
    """Keeps two Python ints on ctx and declares them (the documented protocol)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        ctx.ints = (1, 2)
        note_saved_bytes(16)
        return x * 2

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        return g * 2


class _WithCache(nn.Linear):
    def estimator_extra_bytes(self) -> int:
        return 1234


def test_counts_saved_storages_once_and_skips_parameters() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 16, requires_grad=True)
    lin = nn.Linear(16, 4)
    with ActivationMeter(lin) as m:
        y = x.exp()  # saves its result y (8*16 floats)
        z = y * 3.0  # saves nothing (scalar)
        w = y.sin()  # saves y again: same storage, counted once
        out = lin(w)  # saves w (input); the weight view is a parameter -> excluded
    r = m.report()
    assert r.saved_bytes == 2 * 8 * 16 * 4
    assert r.saved_tensors == 2
    assert sum(r.per_layer.values()) == r.saved_bytes
    assert r.noted_bytes == 0 and r.extra_bytes == 0 and r.cuda_peak_bytes is None
    del z, out


def test_view_counts_its_whole_base_storage() -> None:
    base = torch.randn(100, requires_grad=True) * 1.0  # 400-byte non-leaf
    with ActivationMeter() as m:
        out = base[:10].exp()  # exp saves its result (a fresh 40-byte storage)
        v = base[:10].pow(2)  # pow saves its input, a view of the 400-byte base
    assert m.report().saved_bytes == 40 + 400
    del out, v


def test_buffers_and_explicit_excludes() -> None:
    bn = nn.BatchNorm1d(6)
    x = torch.randn(5, 6, requires_grad=True)
    with ActivationMeter(bn) as m:
        out = bn(x)
    # BN saves its input plus per-channel mean/invstd (2 * 6 floats); weight/buffers excluded
    assert m.report().saved_bytes == 5 * 6 * 4 + 2 * 6 * 4
    with ActivationMeter(bn, exclude=[x]) as m:
        out = bn(x)
    assert m.report().saved_bytes == 2 * 6 * 4
    del out


def test_peak_is_live_bytes_and_freed_graphs_release() -> None:
    x = torch.randn(1000, requires_grad=True)
    with ActivationMeter() as m:
        for _ in range(3):
            loss = x.exp().sum()  # each graph saves 4000 bytes, dropped before the next
            loss.backward()
    r = m.report()
    assert r.saved_bytes == 4000  # never more than one graph alive
    assert r.saved_bytes_total == 3 * 4000
    with ActivationMeter() as m:
        kept = [x.exp().sum() for _ in range(3)]  # three live graphs
    assert m.report().saved_bytes == 3 * 4000
    del kept


def test_noted_and_extra_bytes_protocols() -> None:
    lin = _WithCache(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    with ActivationMeter(lin) as m:
        out = lin(_KeepInts.apply(x))
    r = m.report()
    assert r.noted_bytes == 16 and r.extra_bytes == 1234
    assert r.activation_bytes == r.saved_bytes + 16 == 2 * 4 * 4 + 16
    assert r.total_bytes == r.activation_bytes + 1234
    assert r.as_metrics()["mem_activation_bytes"] == r.activation_bytes
    note_saved_bytes(99)  # no meter active: ignored
    del out


def test_per_layer_names_and_rad_seed_counted() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    model[2] = RADLinear.from_plain(model[2], keep_frac=0.1)
    x = torch.randn(4, 20)
    with ActivationMeter(model) as m:
        out = model(x)
    r = m.report()
    # layer 0 keeps x (the data), ReLU its output (which the RAD layer does not keep),
    # the RAD layer 4 rows * 3 kept values + the 8-byte seed
    assert r.per_layer == {"0": 4 * 20 * 4, "1": 4 * 30 * 4, "2": 4 * 3 * 4 + 8}
    assert r.saved_bytes == sum(r.per_layer.values())
    del out


def test_meters_do_not_nest_and_report_needs_exit() -> None:
    meter = ActivationMeter()
    with pytest.raises(RuntimeError, match="after the context"):
        meter.report()
    with meter, pytest.raises(RuntimeError, match="nest"), ActivationMeter():
        pass
    assert meter.report().saved_bytes == 0


def test_largest_batch_that_fits() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 3))
    calls: list[int] = []

    def step(b: int) -> torch.Tensor:
        calls.append(b)
        return model(torch.randn(b, 10)).sum()

    per_example = (10 + 50) * 4  # input of layer 0 + ReLU output (= input of layer 2)
    assert measure_activation_bytes(step, 7, model=model) == 7 * per_example
    budget = 22 * per_example + per_example // 2
    calls.clear()
    assert largest_batch_that_fits(step, budget, model=model) == 22
    assert len(calls) <= 12
    assert largest_batch_that_fits(step, per_example - 1, model=model) == 0
    assert largest_batch_that_fits(step, 10**9, model=model, max_batch=40) == 40
    assert largest_batch_that_fits(step, 33 * per_example, model=model, max_batch=40) == 33
    for bad in (-1, float("nan"), "big"):
        with pytest.raises(ValueError, match="budget_bytes"):
            largest_batch_that_fits(step, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch"):
        largest_batch_that_fits(step, 100, max_batch=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_recorded() -> None:
    lin = nn.Linear(256, 256).cuda()
    x = torch.randn(512, 256, device="cuda")
    with ActivationMeter(lin) as m:
        out = lin(x)
    r = m.report()
    assert r.cuda_peak_bytes is not None and r.cuda_start_bytes is not None
    assert r.cuda_peak_bytes >= r.cuda_start_bytes + out.numel() * 4
    assert r.saved_bytes == x.numel() * 4
