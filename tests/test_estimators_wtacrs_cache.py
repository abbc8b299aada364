"""WTA-CRS gradient-norm cache and batch context: bookkeeping, checkpoint/resume, DDP, models.

Also: ``convert`` with WTA-CRS's default selection on tamegrad's ``gpt`` and on a Hugging Face
``transformers`` BERT built from a config (random weights, no download; skipped when
``transformers`` is not installed: it is a test-only dependency).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _dist import gloo_available, run_distributed
from tamegrad.estimators import (
    ActivationMeter,
    GradNormCache,
    WTACRSLinear,
    batch_context,
    convert,
    converted_layers,
    norm_cache,
)
from tamegrad.models import create_model

V, T = 13, 16
PAPER_LAYERS = {"attn.proj", "mlp.fc", "mlp.proj"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(method: str = "wtacrs", seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    m = create_model("gpt", num_classes=V, input_shape=(T,), width=16, n_layer=2, n_head=2)
    return convert(m, method, **kw)


# -- the cache object ----------------------------------------------------------------------------
def test_cache_update_lookup_normalise_grow_and_bytes() -> None:
    c = GradNormCache()
    ex = torch.tensor([3, 0])
    assert torch.isnan(c.lookup("a", ex, 4)).all()  # nothing known yet
    norms = torch.tensor([[1.0, 2.0, 3.0, 2.0], [0.0, 4.0, 2.0, 2.0]])
    c.update("a", ex, norms)
    got = c.lookup("a", torch.tensor([0, 3, 7]), 5)
    torch.testing.assert_close(got[1, :4], norms[0] / norms.mean(), rtol=1e-2, atol=0)
    torch.testing.assert_close(got[0, :4], norms[1] / norms.mean(), rtol=1e-2, atol=0)
    assert torch.isnan(got[2]).all() and torch.isnan(got[:, 4]).all()  # unseen example, position
    assert c.num_known("a") == 8 and c.nbytes("a") == 4 * 4 * 2  # bf16, rows 0..3
    c.update("a", torch.tensor([9]), torch.ones(1, 4))  # growth keeps the old rows
    assert c.num_known("a") == 12 and float(c.lookup("a", torch.tensor([9]), 1)) == 1.0
    c.update("a", torch.tensor([9]), torch.full((1, 4), float("inf")))  # non-finite: skipped
    assert float(c.lookup("a", torch.tensor([9]), 1)) == 1.0
    c.update("a", torch.tensor([1, 1]), torch.tensor([[1.0] * 4, [3.0] * 4]))  # last one wins
    assert float(c.lookup("a", torch.tensor([1]), 1)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match=">= 0"):
        c.lookup("a", torch.tensor([-1]), 2)
    with pytest.raises(ValueError, match="shape"):
        c.update("a", ex, torch.ones(3, 4))


def test_cache_state_dict_round_trip() -> None:
    c = GradNormCache()
    c.reserve(100)
    c.update("x", torch.tensor([5, 2]), torch.rand(2, 3) + 0.1)
    c.update("y", torch.tensor([1]), torch.rand(1, 7) + 0.1)
    state = copy.deepcopy(c.state_dict())
    d = GradNormCache()
    d.load_state_dict(state)
    for k in ("x", "y"):
        ex = torch.arange(8)
        torch.testing.assert_close(c.lookup(k, ex, 7), d.lookup(k, ex, 7), equal_nan=True)
    assert d.state_dict()["tables"]["x"].shape == (6, 3)
    with pytest.raises(ValueError, match="GradNormCache state"):
        d.load_state_dict({"tables": {}})


# -- the batch context ----------------------------------------------------------------------------
def test_batch_context_is_per_model_nests_and_restores() -> None:
    a, b = tiny_gpt(), tiny_gpt()
    la = [m for m in a.modules() if isinstance(m, WTACRSLinear)]
    lb = [m for m in b.modules() if isinstance(m, WTACRSLinear)]
    with batch_context(a, [4, 5]):
        assert all(m.batch_examples is not None and m.batch_examples.tolist() == [4, 5]
                   for m in la)
        assert all(m.batch_examples is None for m in lb)  # no leak into the other model
        with batch_context(a, torch.tensor([7])):
            assert la[0].batch_examples.tolist() == [7]  # type: ignore[union-attr]
        assert la[0].batch_examples.tolist() == [4, 5]  # type: ignore[union-attr]
    assert all(m.batch_examples is None for m in la)
    cache_a, cache_b = norm_cache(a), norm_cache(b)
    assert cache_a is not None and cache_b is not None and cache_a is not cache_b
    assert {m.cache_key for m in la} == {f"blocks.{i}.{s}" for i in range(2) for s in PAPER_LAYERS}
    with pytest.raises(ValueError, match="1-D integer"), batch_context(
        a, torch.zeros(2, 2, dtype=torch.int64)
    ):
        pass
    plain = nn.Linear(3, 3)
    with batch_context(plain, [0]):  # a model without estimator layers: a no-op
        plain(torch.randn(1, 3))


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, batches: list, sync: str) -> None:
    """``sync="explicit"``: ``cache.sync()`` after backward; ``"context"``: backward inside
    ``batch_context(..., sync=True)``, which syncs on exit; ``"none"``: no sync."""
    cache = norm_cache(model)
    for ex, x, y in batches:
        opt.zero_grad()
        if sync == "context":
            with batch_context(model, ex, sync=True):
                F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1)).backward()
        else:
            with batch_context(model, ex):
                loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
            loss.backward()
            assert cache is not None
            if sync == "explicit":
                cache.sync()
        opt.step()


def data(seed: int, steps: int, batch: int = 4, n_examples: int = 12) -> list:
    g = torch.Generator().manual_seed(seed)
    xs = torch.randint(0, V, (n_examples, T + 1), generator=g)
    out = []
    for _ in range(steps):
        ex = torch.randperm(n_examples, generator=g)[:batch]
        out.append((ex, xs[ex, :-1], xs[ex, 1:]))
    return out


def test_training_fills_the_cache_reports_bytes_and_resume_is_exact() -> None:
    batches = data(0, 6)
    model = tiny_gpt()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_steps(model, opt, batches[:3], sync="explicit")
    cache = norm_cache(model)
    assert cache is not None and len(cache.layers()) == 6
    seen = torch.unique(torch.cat([b[0] for b in batches[:3]]))
    assert all(cache.num_known(k) == seen.numel() * T for k in cache.layers())
    with ActivationMeter(model) as meter, batch_context(model, batches[3][0]):
        model(batches[3][1])
    assert meter.report().extra_bytes == cache.nbytes() > 0
    # checkpoint: model, optimizer, cache, torch RNG (what the trainer saves)
    ckpt = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(),
                          "cache": cache.state_dict(), "rng": torch.get_rng_state()})
    train_steps(model, opt, batches[3:], sync="explicit")
    resumed = tiny_gpt(seed=123)
    resumed.load_state_dict(ckpt["model"])
    opt2 = torch.optim.Adam(resumed.parameters(), lr=1e-3)
    opt2.load_state_dict(ckpt["opt"])
    c2 = norm_cache(resumed)
    assert c2 is not None
    c2.load_state_dict(ckpt["cache"])
    torch.set_rng_state(ckpt["rng"])
    train_steps(resumed, opt2, batches[3:], sync="explicit")
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    for k, t in cache.state_dict()["tables"].items():
        assert torch.equal(t.view(torch.int16), c2.state_dict()["tables"][k].view(torch.int16))


# -- DDP --------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, out: str) -> None:
    for sync in ("explicit", "context", "none"):
        _ddp_run(rank, world, out, sync)


def _ddp_run(rank: int, world: int, out: str, sync: str) -> None:
    torch.manual_seed(0)
    model = tiny_gpt()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    batches = data(7, 3, batch=4, n_examples=16)
    shard = [(ex[rank::world], x[rank::world], y[rank::world]) for ex, x, y in batches]
    torch.manual_seed(100 + rank)  # ranks draw different rows: only DDP keeps params equal
    train_steps(ddp, opt, shard, sync=sync)
    cache = norm_cache(ddp)
    assert cache is not None
    torch.save({"params": [p.detach() for p in model.parameters()],
                "cache": cache.state_dict()}, Path(out) / f"{sync}{rank}.pt")


@pytest.mark.skipif(not gloo_available(), reason="gloo backend not available")
def test_ddp_two_ranks_end_with_identical_parameters_and_cache(tmp_path: Path) -> None:
    run_distributed(_ddp_worker, 2, str(tmp_path))
    for sync in ("explicit", "context"):
        check_ranks_agree(tmp_path, sync)
    # teeth: without the sync each rank's cache holds only its own examples
    t0 = torch.load(tmp_path / "none0.pt")["cache"]["tables"]
    t1 = torch.load(tmp_path / "none1.pt")["cache"]["tables"]
    assert any(t0[k].shape != t1[k].shape or not torch.equal(t0[k].view(torch.int16),
                                                              t1[k].view(torch.int16))
               for k in t0)


def check_ranks_agree(tmp_path: Path, sync: str) -> None:
    r0 = torch.load(tmp_path / f"{sync}0.pt")
    r1 = torch.load(tmp_path / f"{sync}1.pt")
    for p, q in zip(r0["params"], r1["params"]):
        assert torch.equal(p, q)
    t0, t1 = r0["cache"]["tables"], r1["cache"]["tables"]
    assert t0.keys() == t1.keys() and len(t0) == 6
    seen = torch.unique(torch.cat([b[0] for b in data(7, 3, batch=4, n_examples=16)]))
    for k in t0:
        assert torch.equal(t0[k].view(torch.int16), t1[k].view(torch.int16))
        known = ~torch.isnan(t0[k]).all(dim=1)  # both ranks' examples are in every cache
        assert torch.nonzero(known).flatten().tolist() == seen.tolist()


# -- default selection on models ----------------------------------------------------------------
def test_default_selection_on_gpt_is_the_papers_layers() -> None:
    model = tiny_gpt()
    names = set(converted_layers(model))
    assert names == {f"blocks.{i}.{s}" for i in range(2) for s in PAPER_LAYERS}
    assert all(not n.endswith(("qkv", "head")) for n in names)


def test_a_cache_given_to_convert_is_the_models_cache() -> None:
    """The trainer can create the cache (a named checkpoint state) before the model exists."""
    cache = GradNormCache()
    model = tiny_gpt(norm_cache=cache)
    assert norm_cache(model) is cache
    other = GradNormCache()
    assert norm_cache(model, other) is other and norm_cache(model) is other
    with pytest.raises(ValueError, match="norm_cache"):
        tiny_gpt(norm_cache={"not": "a cache"})


def test_huggingface_bert_from_config() -> None:
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    cfg = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=T,
    )
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg)
    ids = torch.randint(0, 50, (3, T))
    bert.eval()
    ref = bert(input_ids=ids).last_hidden_state
    model = convert(
        bert, "wtacrs", keep_frac=0.3,
        include=["*.attention.output.dense", "*.intermediate.dense", "*.output.dense"],
        exclude=["*.query", "*.key", "*.value", "pooler.*"],
    )
    names = set(converted_layers(model))
    paper = {f"encoder.layer.{i}.{s}" for i in range(2)
             for s in ("attention.output.dense", "intermediate.dense", "output.dense")}
    assert names == paper
    model.eval()
    torch.testing.assert_close(model(input_ids=ids).last_hidden_state, ref)
    model.train()
    with batch_context(model, torch.tensor([0, 1, 2])):
        out = model(input_ids=ids).last_hidden_state
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for n, p in model.named_parameters() if "encoder" in n)
    cache = norm_cache(model)
    assert cache is not None and sorted(cache.layers()) == sorted(paper)
    torch.manual_seed(0)
    again = convert(transformers.BertModel(cfg), "wtacrs")  # the default selection agrees
    assert set(converted_layers(again)) == paper
