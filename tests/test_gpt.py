"""The ``gpt`` model: shapes, causality, module names, options, and that it learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tamegrad.models import GPT, create_model, describe_model

V, T = 11, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def small(**kw: object) -> nn.Module:
    torch.manual_seed(0)
    opts = {"n_layer": 2, "n_head": 2, **kw}
    return create_model("gpt", num_classes=V, input_shape=(T,), width=16, **opts)


def test_shapes_and_parameter_count() -> None:
    m = small()
    assert isinstance(m, GPT) and m.block_size == T
    x = torch.randint(0, V, (3, T))
    assert m(x).shape == (3, T, V)
    assert m(x[:, :5]).shape == (3, 5, V)  # shorter windows are fine
    e, L = 16, 2
    per_block = 2 * 2 * e + (3 * e * e + 3 * e) + (e * e + e) + (4 * e * e + 4 * e) + (
        4 * e * e + e
    )
    expected = V * e + T * e + L * per_block + 2 * e + e * V
    assert sum(p.numel() for p in m.parameters()) == expected
    assert "gpt" in describe_model("gpt")


def test_module_names_match_the_paper_selection() -> None:
    m = small()
    linears = {n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)}
    expected = {f"blocks.{i}.{s}" for i in range(2)
                for s in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")} | {"head"}
    assert linears == expected
    assert not any(isinstance(mod, nn.Dropout) for mod in m.modules())


def test_attention_is_causal() -> None:
    m = small()
    m.eval()
    x = torch.randint(0, V, (2, T))
    y = x.clone()
    y[:, 9] = (y[:, 9] + 1) % V
    a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_options_and_errors() -> None:
    m = small(block_size=32, n_layer=3, n_head=4)
    assert isinstance(m, GPT) and m.block_size == 32 and len(m.blocks) == 3
    with pytest.raises(ValueError, match="block_size"):
        small()(torch.randint(0, V, (1, T + 1)))
    with pytest.raises(ValueError, match="divisible"):
        small(n_head=3)
    with pytest.raises(ValueError, match="n_layer"):
        small(n_layer=0)
    with pytest.raises(ValueError, match="dropout"):
        small(dropout=0.1)


def test_learns_a_periodic_sequence() -> None:
    m = small()
    x = torch.arange(T + 1).remainder(5).repeat(8, 1)
    x = torch.stack([row.roll(i) for i, row in enumerate(x)])
    inp, tgt = x[:, :-1], x[:, 1:]
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(m(inp).reshape(-1, V), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 2.0 and losses[-1] < 0.3 * losses[0]
