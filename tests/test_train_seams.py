"""The trainer's seams, each used as the coming features will use it: a sampler that weights the
loss and gets per-example losses back, a layer conversion, batches with example indices, and a
per-rank optimizer state surviving a 2-process kill and resume."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _dist import gloo_available, run_distributed
from tamegrad.data import BatchLoader, load_dataset
from tamegrad.distributed import DistContext
from tamegrad.train import RunExtensions, TrainConfig, load_checkpoint, train
from tamegrad.train.extensions import SamplerSpec
from tamegrad.train.run_folder import RunFolder

VECTORS = {"n_train": 64, "n_test": 16, "as_vectors": True}


def tiny(**changes: Any) -> TrainConfig:
    base = dict(dataset="synthetic", dataset_options=VECTORS, model="mlp", width=8,
                optimizer="sgd", lr=0.1, batch_size=8, epochs=2, device="cpu")
    return TrainConfig(**{**base, **changes})


def model_state(run: Path) -> dict[str, Tensor]:
    return load_checkpoint(RunFolder(run).checkpoint_path)["model"]


def test_loader_batches_carry_the_example_indices() -> None:
    ds = load_dataset("synthetic", **VECTORS)
    loader = BatchLoader(ds.train_x, ds.train_y, 8, shuffle=True, seed=3, rank=1, world_size=2)
    seen = []
    for (x, y), batch in zip(loader.epoch(1), loader.batches(1), strict=True):
        assert torch.equal(batch.x, x) and torch.equal(batch.y, y) and batch.weights is None
        assert torch.equal(ds.train_x[batch.indices], x)
        assert torch.equal(loader.load(batch.indices, 1, len(seen))[0], x)
        seen.append(batch.indices)
    assert len(torch.cat(seen).unique()) == 8 * len(seen)


class ToySampler:
    """Fixed batches in index order with weights 2 (even index) / 0.5 (odd); records updates.
    Its state is the position in the epoch, so a resumed run continues where it stopped."""

    def __init__(self, spec: SamplerSpec) -> None:
        self.n, self.b = spec.num_samples, spec.batch_size
        self.epoch, self.pos = -1, 0
        self.updates: list[tuple[Tensor, Tensor]] = []

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.pos = epoch, 0

    def __len__(self) -> int:
        return self.n // self.b

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        while self.pos < len(self):
            idx = torch.arange(self.pos * self.b, (self.pos + 1) * self.b)
            self.pos += 1
            yield idx, torch.where(idx % 2 == 0, 2.0, 0.5)

    def update(self, indices: Tensor, losses: Tensor) -> None:
        self.updates.append((indices.clone(), losses.clone()))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]


def test_sampler_weights_the_loss_and_gets_per_example_losses(tmp_path: Path) -> None:
    samplers: list[ToySampler] = []
    models: list[nn.Module] = []

    def make(spec: SamplerSpec) -> ToySampler:
        samplers.append(ToySampler(spec))
        return samplers[-1]

    def keep(model: nn.Module) -> nn.Module:
        models.append(copy.deepcopy(model))  # the initial weights
        return model

    cfg = tiny(epochs=1, limit_train_batches=1)
    train(cfg, tmp_path, extensions=RunExtensions(convert_model=keep, make_sampler=make))
    (idx, losses), = samplers[0].updates
    assert torch.equal(idx, torch.arange(8))
    # oracle: one SGD step on the weighted mean of the per-example losses
    ds = load_dataset("synthetic", **VECTORS)
    ref = models[0]
    per_example = F.cross_entropy(ref(ds.train_x[idx]), ds.train_y[idx], reduction="none")
    torch.testing.assert_close(losses, per_example.detach(), rtol=0, atol=1e-6)
    w = torch.where(idx % 2 == 0, 2.0, 0.5)
    (per_example * w).mean().backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    trained = model_state(tmp_path)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(trained[k], v, rtol=1e-6, atol=1e-7)


def test_sampler_state_resumes_exactly(tmp_path: Path) -> None:
    cfg = tiny(checkpoint_every_steps=3, epochs=2)
    train(cfg, tmp_path / "ref", extensions=RunExtensions(make_sampler=ToySampler))

    calls = {"n": 0}

    def crash_at_batch_11(model: nn.Module, batch: Any) -> contextlib.AbstractContextManager[None]:
        calls["n"] += 1
        if calls["n"] == 11:  # epoch 2, batch 3; the last checkpoint is epoch 2, batch 1
            raise KeyboardInterrupt
        return contextlib.nullcontext()

    run = tmp_path / "run"
    ext = RunExtensions(make_sampler=ToySampler, batch_context=crash_at_batch_11)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, extensions=ext)
    folder = RunFolder(run)
    assert folder.read_summary()["status"] == "interrupted"  # type: ignore[index]
    ck = load_checkpoint(folder.checkpoint_path)
    assert ck["states"]["sampler"] == {"epoch": 1, "pos": 1}
    train(cfg, run, resume=True, extensions=RunExtensions(make_sampler=ToySampler))
    for k, v in model_state(tmp_path / "ref").items():
        assert torch.equal(model_state(run)[k], v), k
    with pytest.raises(Exception, match="no state for extra"):  # a state the run needs
        train(cfg, tmp_path / "ref", resume=True,
              extensions=RunExtensions(make_sampler=ToySampler, states={"extra": ToySampler(
                  SamplerSpec(64, 8, 0, DistContext.single()))}))


class CountingLinear(nn.Linear):
    """A converted layer: same parameters and keys as nn.Linear, counts training forwards."""

    calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            CountingLinear.calls += 1
        return super().forward(x)


def convert_linears(model: nn.Module) -> nn.Module:
    for child in list(model.children()):
        if type(child) is nn.Linear:
            child.__class__ = CountingLinear
        else:
            convert_linears(child)
    return model


def test_layer_conversion_is_applied_before_the_optimizer(tmp_path: Path) -> None:
    CountingLinear.calls = 0
    cfg = tiny(epochs=1)
    train(cfg, tmp_path / "plain")
    train(cfg, tmp_path / "conv", extensions=RunExtensions(convert_model=convert_linears))
    n_linear = sum(isinstance(m, nn.Linear) for m in convert_linears(
        __import__("tamegrad.models", fromlist=["create_model"]).create_model(
            "mlp", num_classes=2, input_shape=(16,), width=8)).modules())
    assert CountingLinear.calls == 8 * n_linear  # 8 batches, every Linear converted
    plain, conv = model_state(tmp_path / "plain"), model_state(tmp_path / "conv")
    assert plain.keys() == conv.keys()
    for k in plain:  # the converted layers computed the same thing, and were trained
        assert torch.equal(plain[k], conv[k]), k


# -- per-rank optimizer state, 2 processes -------------------------------------------------------


class ShardedMomentumSGD(torch.optim.Optimizer):
    """ZeRO-style toy: rank r keeps the momentum buffers of parameters i with i % W == r only,
    updates those and broadcasts them; its state differs between ranks."""

    state_is_per_rank = True

    def __init__(self, params: Any, lr: float = 0.05, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self.ctx = DistContext.current()

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        params = [p for g in self.param_groups for p in g["params"]]
        g0 = self.param_groups[0]
        for i, p in enumerate(params):
            if i % self.ctx.world_size == self.ctx.rank and p.grad is not None:
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(g0["momentum"]).add_(p.grad)
                p.add_(buf, alpha=-g0["lr"])
        for i, p in enumerate(params):
            self.ctx.broadcast_(p.data, src=i % self.ctx.world_size)


def _sharded_worker(rank: int, world: int, out: str) -> None:
    from tamegrad.optim import register

    register("sharded-sgd", ShardedMomentumSGD, "test")
    cfg = tiny(optimizer="sharded-sgd", lr=0.05, batch_size=4, epochs=2,
               checkpoint_every_steps=3)
    calls = {"n": 0}

    def crash(model: nn.Module, batch: Any) -> contextlib.AbstractContextManager[None]:
        calls["n"] += 1
        if calls["n"] == 8:
            raise RuntimeError("simulated crash")
        return contextlib.nullcontext()

    train(cfg, f"{out}/ref")
    with contextlib.suppress(RuntimeError):
        train(cfg, f"{out}/run", extensions=RunExtensions(batch_context=crash))
    crashed = load_checkpoint(RunFolder(f"{out}/run").checkpoint_path)["global_step"]
    train(cfg, f"{out}/run", resume=True)
    result: dict[str, Any] = {"crashed_step": crashed}
    for name in ("ref", "run"):
        folder = RunFolder(f"{out}/{name}")
        result[name] = {"model": load_checkpoint(folder.checkpoint_path)["model"],
                        "opt": load_checkpoint(folder.shard_paths(rank)[-1])["optimizer"]}
    torch.save(result, f"{out}/rank{rank}.pt")


@pytest.mark.skipif(not gloo_available(), reason="gloo not available")
def test_per_rank_optimizer_state_survives_two_process_kill_and_resume(tmp_path: Path) -> None:
    # 8 batches per epoch (64 / (4 x 2)); checkpoints at steps 3, 6; the crash is at batch 8
    run_distributed(_sharded_worker, 2, str(tmp_path))
    for rank in (0, 1):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert r["crashed_step"] == 6
        ref, got = r["ref"], r["run"]
        for k in ref["model"]:
            assert torch.equal(got["model"][k], ref["model"][k]), k
        bufs = ref["opt"]["state"]
        assert sorted(bufs) == [i for i in range(len(ref["model"])) if i % 2 == rank]
        for i in bufs:
            assert torch.equal(got["opt"]["state"][i]["buf"], bufs[i]["buf"])
