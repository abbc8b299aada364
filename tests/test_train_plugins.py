"""TrainConfig's estimator / sampler fields through the trainer: conversion, activation bytes
in the metrics, checkpointed cache and sampler states (exact resume, 1 and 2 processes)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from _dist import gloo_available, run_distributed
from tamegrad.train import RunExtensions, TrainConfig, load_checkpoint, train
from tamegrad.train.run_folder import RunFolder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VECTORS = {"n_train": 96, "n_test": 32, "as_vectors": True}


def mlp(**changes: Any) -> TrainConfig:
    base = dict(dataset="synthetic", dataset_options=VECTORS, model="mlp", width=32,
                optimizer="sgd", lr=0.1, batch_size=16, epochs=2, device="cpu")
    return TrainConfig(**{**base, **changes})


def gpt(**changes: Any) -> TrainConfig:
    base = dict(dataset="tinyshakespeare", data_dir=str(DATA), train_subset=48, seq_len=16,
                model="gpt", width=16, model_options={"n_layer": 1, "n_head": 2},
                optimizer="adam", lr=3e-3, batch_size=8, epochs=2, device="cpu",
                estimator="wtacrs", keep_frac=0.3, checkpoint_every_steps=2)
    return TrainConfig(**{**base, **changes})


class CrashAt:
    """A batch context raising as the n-th training micro-batch (1-based) starts."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self, model: Any, batch: Any) -> contextlib.AbstractContextManager[None]:
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("simulated crash")
        return contextlib.nullcontext()


def final(run: Path) -> dict[str, Any]:
    return load_checkpoint(RunFolder(run).checkpoint_path)


def assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):  # bitwise, NaN == NaN (the cache marks unseen rows NaN)
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if "seconds" not in str(k) and k != "wall_time":  # timings differ by nature
                assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def crash_and_resume(cfg: TrainConfig, tmp: Path, crash_at: int) -> tuple[dict, dict]:
    train(cfg, tmp / "ref")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, tmp / "run", extensions=RunExtensions(batch_context=CrashAt(crash_at)))
    train(cfg, tmp / "run", resume=True)
    return final(tmp / "ref"), final(tmp / "run")


def test_config_fields_are_validated() -> None:
    with pytest.raises(ValueError, match=r"keep_frac.*needs an estimator"):
        mlp(keep_frac=0.5).validate()
    with pytest.raises(ValueError, match=r"keep_frac=1.5"):
        mlp(estimator="rad", keep_frac=1.5).validate()
    with pytest.raises(ValueError, match="sampler='importance'"):
        mlp(sampler="importance").validate()
    with pytest.raises(ValueError, match="sampler_options"):
        mlp(sampler_options={"eps": 0.1}).validate()
    assert TrainConfig.from_dict(mlp(estimator="rad", estimator_include=("net.*",)).to_dict()
                                 ).estimator_include == ("net.*",)


def test_rad_estimator_from_config_records_fewer_activation_bytes(tmp_path: Path) -> None:
    train(mlp(measure_activations=True), tmp_path / "exact")
    train(mlp(estimator="rad", keep_frac=0.1), tmp_path / "rad")
    exact = RunFolder(tmp_path / "exact").read_metrics()
    rad = RunFolder(tmp_path / "rad").read_metrics()
    assert [r["epoch"] for r in rad] == [1, 2]
    assert all(r["mem_activation_bytes"] > 0 for r in exact + rad)
    assert rad[-1]["mem_activation_bytes"] < 0.8 * exact[-1]["mem_activation_bytes"]
    # the converted model still saves plain-layer keys
    assert final(tmp_path / "rad")["model"].keys() == final(tmp_path / "exact")["model"].keys()


@pytest.mark.skipif(not (DATA / "tinyshakespeare.txt").exists(), reason="no shared data")
def test_wtacrs_run_resumes_exactly_with_its_norm_cache(tmp_path: Path) -> None:
    ref, run = crash_and_resume(gpt(), tmp_path, crash_at=4)  # last checkpoint: step 2
    assert ref["states"]["norm_cache"], "the cache was checkpointed"
    assert_same(run["model"], ref["model"], "model")
    assert_same(run["states"], ref["states"], "states")
    rows = RunFolder(tmp_path / "run").read_metrics()
    assert rows[-1]["mem_extra_bytes"] > 0  # the cache's bytes are reported


@pytest.mark.parametrize("sampler", ["priority", "infobatch"])
def test_sampler_run_resumes_exactly(tmp_path: Path, sampler: str) -> None:
    cfg = mlp(sampler=sampler, epochs=3, checkpoint_every_steps=2)
    ref, run = crash_and_resume(cfg, tmp_path, crash_at=9)
    assert_same(run["model"], ref["model"], "model")
    assert_same(run["states"]["sampler"], ref["states"]["sampler"], "sampler")
    rows = RunFolder(tmp_path / "run").read_metrics()
    assert all("sampler_weight_max" in r for r in rows)


def _two_rank_worker(rank: int, world: int, out: str) -> None:
    from tamegrad.estimators import norm_cache

    cfg = gpt(sampler="priority", epochs=2, batch_size=4)
    models: list[Any] = []
    keep = RunExtensions(convert_model=lambda m: models.append(m) or m)
    train(cfg, f"{out}/ref", extensions=keep)
    with contextlib.suppress(RuntimeError):
        train(cfg, f"{out}/run", extensions=RunExtensions(batch_context=CrashAt(4)))
    train(cfg, f"{out}/run", resume=True)
    result = {name: final(Path(out) / name) for name in ("ref", "run")}
    result["own_cache"] = norm_cache(models[0]).state_dict()  # this rank's, in memory
    torch.save(result, f"{out}/r{rank}.pt")


@pytest.mark.skipif(not gloo_available() or not (DATA / "tinyshakespeare.txt").exists(),
                    reason="needs gloo and the shared data")
def test_two_ranks_share_cache_and_sampler_and_resume_exactly(tmp_path: Path) -> None:
    """WTA-CRS + priority sampler under 2 gloo processes: the checkpoint holds one cache and one
    sampler table for both ranks (they stay identical), and a crashed run resumes exactly."""
    run_distributed(_two_rank_worker, 2, str(tmp_path))
    r0 = torch.load(tmp_path / "r0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "r1.pt", weights_only=False)
    assert_same(r0, r1, "ranks")  # incl. each rank's own in-memory cache
    assert_same(r0["own_cache"], r0["ref"]["states"]["norm_cache"], "cache")
    assert_same(r0["run"]["model"], r0["ref"]["model"], "model")
    assert_same(r0["run"]["states"], r0["ref"]["states"], "states")
    assert r0["ref"]["world_size"] == 2


def test_schedule_follows_the_real_steps_when_epochs_shrink(tmp_path: Path) -> None:
    """InfoBatch prunes epochs 2..: a per-step cosine built from epoch 1's length would end
    above 0; the schedule follows the fractional epoch instead and ends at exactly 0."""
    cfg = mlp(sampler="infobatch", epochs=4, schedule="cosine", lr=0.1,
              sampler_options={"prune_frac": 0.5, "anneal_frac": 0.25})
    train(cfg, tmp_path)
    rows = RunFolder(tmp_path).read_metrics()
    lengths = [r["sampler_batches_in_epoch"] for r in rows]
    assert lengths[1] < lengths[0], lengths  # the epochs did shrink
    for e, r in enumerate(rows):  # the lr of each epoch's first step: cosine at epoch e
        assert r["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi * e / 4)), abs=1e-12)
    last_lr = final(tmp_path)["optimizer"]["param_groups"][0]["lr"]
    assert last_lr == pytest.approx(0.0, abs=1e-12)


def test_priority_presample_mode_scores_candidates_with_the_model(tmp_path: Path) -> None:
    """--sampler-options presample=3: the trainer gives the sampler a scorer (a forward pass of
    the current model); with tau_threshold=0 every step pre-samples and scores 3b candidates."""
    cfg = mlp(sampler="priority", epochs=1,
              sampler_options={"presample": 3, "tau_threshold": 0.0})
    train(cfg, tmp_path)
    row = RunFolder(tmp_path).read_metrics()[-1]
    assert row["sampler_presampled_steps"] == row["sampler_steps"] > 0
    assert row["sampler_scoring_seconds"] > 0
