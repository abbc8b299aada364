"""Tests for tamegrad.train: config, schedules, checkpoints and the training loop (in-process)."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from tamegrad.train import (
    CheckpointError,
    NonFiniteLossError,
    RunExtensions,
    TrainConfig,
    create_scheduler,
    load_checkpoint,
    lr_factor,
    save_checkpoint,
    train,
)
from tamegrad.train.build import augment_for

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TIME_KEYS = {"epoch_time", "wall_time"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw: Any) -> TrainConfig:
    """A run of well under a second: an MLP on 128 synthetic vectors."""
    base: dict[str, Any] = {
        "dataset": "synthetic",
        "dataset_options": {"n_train": 128, "n_test": 64, "as_vectors": True, "noise": 0.3},
        "model": "mlp",
        "width": 32,
        "lr": 0.05,
        "epochs": 2,
        "batch_size": 8,
    }
    base.update(kw)
    return TrainConfig(**base)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def strip_times(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


def model_state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------
# config


def test_config_defaults() -> None:
    c = TrainConfig()
    assert (c.dataset, c.model, c.optimizer, c.lr, c.weight_decay) == (
        "digits", "mlp", "sgd", 0.1, 0.0)
    assert (c.batch_size, c.epochs, c.schedule, c.grad_accum, c.clip_grad_norm) == (
        8, 5, "constant", 1, None)
    assert (c.seed, c.device, c.amp, c.train_subset, c.eval_batch_size, c.augment) == (
        0, "auto", False, None, 512, True)
    assert (c.seq_len, c.limit_train_batches, c.checkpoint_every_steps) == (128, None, None)
    assert c.norm_mean is None and c.norm_std is None
    assert c.model_options == {} and c.dataset_options == {} and c.optimizer_kwargs == {}
    assert c.validate() is c


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"schedule": "linear"}, "schedule"),
        ({"grad_accum": 0}, "grad_accum"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm"),
        ({"device": "tpu"}, "device"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"limit_train_batches": 0}, "limit_train_batches"),
        ({"checkpoint_every_steps": -5}, "checkpoint_every_steps"),
        ({"train_subset": 0}, "train_subset"),
        ({"seq_len": 0}, "seq_len"),
        ({"batch_size": 8.0}, "batch_size"),
        ({"amp": "yes"}, "amp"),
        ({"optimizer_kwargs": []}, "optimizer_kwargs"),
        ({"norm_mean": (0.5,)}, "norm_mean/norm_std"),
        ({"norm_mean": (0.5,), "norm_std": (0.0,)}, "norm_std"),
        ({"norm_mean": (0.5, 0.5), "norm_std": (0.2,)}, "same length"),
    ],
)
def test_validate_names_bad_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**changes).validate()


def test_validate_reports_all_bad_fields_at_once() -> None:
    with pytest.raises(ValueError) as err:
        TrainConfig(batch_size=0, epochs=0, schedule="bogus").validate()
    msg = str(err.value)
    assert "batch_size=0" in msg and "epochs=0" in msg and "schedule='bogus'" in msg


def test_config_json_round_trip() -> None:
    c = TrainConfig(
        dataset="cifar10", model="resnet18", width=16, optimizer="trsgd",
        optimizer_kwargs={"momentum": 0.9, "betas": [0.9, 0.99]}, lr=0.1, schedule="step",
        norm_mean=(0.1, 0.2, 0.3), norm_std=(0.4, 0.5, 0.6), model_options={"depth": 2},
        dataset_options={"x": 1}, clip_grad_norm=5.0, checkpoint_every_steps=100,
    )
    d = json.loads(json.dumps(c.to_dict()))
    back = TrainConfig.from_dict(d)
    assert back == c
    assert isinstance(back.norm_mean, tuple)
    assert TrainConfig.from_dict({}) == TrainConfig()
    with pytest.raises(ValueError, match=r"Unknown TrainConfig field.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig.from_dict({"epochs": -1})


def test_resume_differences() -> None:
    a = TrainConfig()
    assert a.resume_differences(TrainConfig(device="cpu", eval_batch_size=7, data_dir="x")) == []
    assert a.resume_differences(TrainConfig(epochs=9)) == []  # constant schedule: may extend
    assert a.resume_differences(TrainConfig(lr=0.2)) == ["lr: 0.2 -> 0.1"]
    step = TrainConfig(schedule="step")
    assert step.resume_differences(TrainConfig(schedule="step", epochs=9)) == ["epochs: 9 -> 5"]


# --------------------------------------------------------------------------------------------
# schedules


def test_step_schedule_paper_milestones() -> None:
    def f(epoch: int) -> float:
        return lr_factor("step", epoch * 10, epochs=200, steps_per_epoch=10)

    assert f(0) == f(99) == 1.0
    assert f(100) == f(149) == 0.1
    assert f(150) == f(199) == 0.01
    # mid-epoch steps use the epoch's factor
    assert lr_factor("step", 1009, epochs=200, steps_per_epoch=10) == 0.1
    assert lr_factor("step", 999, epochs=200, steps_per_epoch=10) == 1.0
    # 5 epochs: 50% = 2.5 -> epochs 3,4 (1-based 4,5) reduced; 75% = 3.75 -> epoch index 4
    assert [lr_factor("step", e, epochs=5, steps_per_epoch=1) for e in range(5)] == [
        1.0, 1.0, 1.0, 0.1, 0.01]


def test_cosine_and_constant_schedules() -> None:
    total = 4 * 25
    vals = [lr_factor("cosine", t, epochs=4, steps_per_epoch=25) for t in range(total + 1)]
    assert vals[0] == 1.0
    assert vals[total // 2] == pytest.approx(0.5)
    assert vals[total] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(vals))  # monotone, per step
    assert vals[total - 1] > 0
    assert lr_factor("constant", 12345, epochs=1, steps_per_epoch=1) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("linear", 0, epochs=1, steps_per_epoch=1)


def test_scheduler_drives_optimizer_and_round_trips() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.4)
    sched = create_scheduler(opt, "step", epochs=4, steps_per_epoch=3)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.4] * 6 + [0.04] * 3 + [0.004] * 3)
    state = sched.state_dict()
    opt2 = torch.optim.SGD([p], lr=0.4)
    sched2 = create_scheduler(opt2, "step", epochs=4, steps_per_epoch=3)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 12
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.004)
    with pytest.raises(ValueError, match="schedule"):
        create_scheduler(opt, "exp", epochs=1, steps_per_epoch=1)


# --------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_round_trip_and_atomicity(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "last.pt"
    payload = {"model": {"w": torch.arange(5.0)}, "epoch": 3, "metrics": [{"a": 1.0}],
               "rng": torch.get_rng_state()}
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(5.0))
    assert loaded["epoch"] == 3 and loaded["metrics"] == [{"a": 1.0}]
    assert "format" not in loaded
    assert os.listdir(path.parent) == ["last.pt"]  # no temp file left


def test_failed_save_leaves_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()

    def broken_save(obj: Any, f: Any) -> None:
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not_tamegrad", "pickle"])
def test_corrupt_checkpoint_raises_and_is_untouched(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(100)}, "epoch": 1})
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x00not a zip file" * 10)
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not_tamegrad":
        torch.save({"weights": torch.ones(2)}, path)
    else:  # an arbitrary pickled object: refused by weights_only loading
        import collections

        torch.save(collections.Counter(a=1), path)
    data = path.read_bytes()
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    assert path.read_bytes() == data
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------
# training


def test_training_learns_and_writes_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny(epochs=4, dataset_options={"n_train": 256, "n_test": 64, "as_vectors": True,
                                          "noise": 0.6})
    summary = train(cfg, run)
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints", "config.json", "metrics.jsonl", "summary.json"]
    assert os.listdir(run / "checkpoints") == ["last.pt"]
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["step"] for r in rows] == [32, 64, 96, 128]  # 256 samples / batch 8
    for r in rows:
        assert set(r) == {"epoch", "step", "lr", "train_loss", "train_acc", "test_loss",
                          "test_acc", "epoch_time", "wall_time"}
        assert r["lr"] == 0.05 and 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1
    assert rows[-1]["train_loss"] < 0.7 * rows[0]["train_loss"]
    assert rows[-1]["test_acc"] > 0.8
    assert rows[0]["wall_time"] < rows[-1]["wall_time"]
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == summary
    assert summary["status"] == "completed" and summary["epochs"] == 4
    assert summary["final_test_acc"] == rows[-1]["test_acc"]
    assert summary["best_test_acc"] == max(r["test_acc"] for r in rows)
    assert summary["final_train_loss"] == rows[-1]["train_loss"]
    assert "error" not in summary
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["epoch"] == 4 and ck["batch_in_epoch"] == 0 and ck["global_step"] == 128
    assert TrainConfig.from_dict(ck["config"]) == cfg


def test_train_is_deterministic(tmp_path: Path) -> None:
    a = train(tiny(), tmp_path / "a")
    b = train(tiny(), tmp_path / "b")
    assert strip_times(read_metrics(tmp_path / "a")) == strip_times(read_metrics(tmp_path / "b"))
    assert a["final_train_loss"] == b["final_train_loss"]
    assert_same_state(model_state(tmp_path / "a"), model_state(tmp_path / "b"))
    train(tiny(seed=1), tmp_path / "c")
    assert read_metrics(tmp_path / "c")[-1]["train_loss"] != read_metrics(tmp_path / "a")[-1][
        "train_loss"]


def test_image_data_cnn_step_schedule_and_limit(tmp_path: Path) -> None:
    cfg = tiny(dataset_options={"n_train": 96, "n_test": 32}, model="cnn", width=4,
               schedule="step", epochs=4, limit_train_batches=5, optimizer="sgd",
               optimizer_kwargs={"momentum": 0.9}, weight_decay=5e-4)
    train(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.05, 0.005, 0.0005])


def test_grad_accum_equals_large_batch(tmp_path: Path) -> None:
    """2 micro-batches of 4 == 1 batch of 8 (same permutation; MLP has no batch statistics)."""
    train(tiny(batch_size=8, epochs=1), tmp_path / "big")
    train(tiny(batch_size=4, grad_accum=2, epochs=1), tmp_path / "acc")
    big, acc = model_state(tmp_path / "big"), model_state(tmp_path / "acc")
    for k in big:
        torch.testing.assert_close(acc[k], big[k], rtol=1e-5, atol=1e-6)
    rb, ra = read_metrics(tmp_path / "big")[0], read_metrics(tmp_path / "acc")[0]
    assert rb["step"] == ra["step"] == 16
    assert ra["test_acc"] == rb["test_acc"]
    assert ra["test_loss"] == pytest.approx(rb["test_loss"], rel=1e-5)


def test_partial_accumulation_group_is_stepped(tmp_path: Path) -> None:
    # 5 micro-batches per epoch with grad_accum=2 -> groups (2, 2, 1) -> 3 steps per epoch
    train(tiny(limit_train_batches=5, grad_accum=2, epochs=2, schedule="cosine"), tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [3, 6]
    assert rows[1]["lr"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))


def test_clip_grad_norm_is_applied(tmp_path: Path, monkeypatch) -> None:
    seen: list[float] = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params: Any, max_norm: float, *a: Any, **k: Any) -> torch.Tensor:
        seen.append(max_norm)
        return real(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train(tiny(clip_grad_norm=0.5, epochs=1, grad_accum=2), tmp_path)
    assert seen == [0.5] * 8  # one call per optimizer step


def test_text_metrics_have_bits_per_char(tmp_path: Path) -> None:
    if not (DATA_DIR / "tinyshakespeare.txt").is_file():
        pytest.skip("tinyshakespeare.txt not available")
    cfg = TrainConfig(dataset="tinyshakespeare", data_dir=str(DATA_DIR), model="char-lstm",
                      width=16, model_options={"embed_dim": 8}, seq_len=16, train_subset=64,
                      optimizer="adam", lr=0.01, epochs=1, eval_batch_size=4096)
    summary = train(cfg, tmp_path)
    row = read_metrics(tmp_path)[0]
    assert row["step"] == 8
    assert row["train_bpc"] == pytest.approx(row["train_loss"] / math.log(2))
    assert row["test_bpc"] == pytest.approx(row["test_loss"] / math.log(2))
    assert row["test_loss"] < math.log(65)  # better than uniform over the vocabulary
    assert summary["final_test_bpc"] == row["test_bpc"]


def test_amp_on_cpu_is_ignored_with_warning(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tamegrad.train"):
        summary = train(tiny(amp=True, epochs=1, device="cpu"), tmp_path)
    assert summary["status"] == "completed"
    assert "amp=True ignored" in caplog.text


def test_cuda_request_without_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(tiny(device="cuda"), tmp_path)


def test_progress_bar_and_epoch_log(tmp_path: Path, capsys, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="tamegrad.train"):
        train(tiny(epochs=2), tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err
    epoch_lines = [r for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epoch_lines) == 2 and "test_acc" in epoch_lines[0].getMessage()


def test_unknown_names_fail_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown optimizer"):
        train(tiny(optimizer="nope"), tmp_path / "a")
    with pytest.raises(ValueError, match="Unknown model"):
        train(tiny(model="nope"), tmp_path / "b")
    with pytest.raises(ValueError, match="does not accept"):
        train(tiny(optimizer_kwargs={"bogus": 1}), tmp_path / "c")
    for d in ("a", "b", "c"):
        assert not (tmp_path / d / "metrics.jsonl").exists()
    with pytest.raises(ValueError, match="batch_size"):
        train(tiny(batch_size=0), tmp_path / "d")


# --------------------------------------------------------------------------------------------
# non-finite loss


def test_nan_loss_stops_with_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError) as err:
        train(tiny(lr=1e12, epochs=3), tmp_path)
    e = err.value
    assert e.epoch >= 1 and e.step >= 2 and not math.isfinite(e.value)
    assert f"epoch {e.epoch}" in str(e) and f"step {e.step}" in str(e)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "NonFiniteLossError" in summary["error"] and f"step {e.step}" in summary["error"]


class _AtMicroBatch:
    """A ``batch_context`` (the trainer's per-batch seam) that calls ``action(batch)`` when the
    ``n``-th training micro-batch of the session (1-based) starts."""

    def __init__(self, n: int, action: Any) -> None:
        self.n, self.action, self.calls = n, action, 0

    def __call__(self, model: Any, batch: Any) -> contextlib.nullcontext[None]:
        self.calls += 1
        if self.calls == self.n:
            self.action(batch)
        return contextlib.nullcontext()


def test_injected_nan_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints" / "last.pt"
    good: list[bytes] = []

    def poison(batch: Any) -> None:  # epoch 2, batch 5 (16 batches per epoch)
        good.append(ckpt.read_bytes())
        batch.x.fill_(float("nan"))

    ext = RunExtensions(batch_context=_AtMicroBatch(16 + 5 + 1, poison))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 at optimizer step 22") as err:
        train(tiny(epochs=3, checkpoint_every_steps=4), tmp_path, extensions=ext)
    assert (err.value.epoch, err.value.step) == (2, 22)
    assert math.isnan(err.value.value)
    # the checkpoint is the last one written before the bad step (step 20), byte for byte
    assert ckpt.read_bytes() == good[-1]
    ck = load_checkpoint(ckpt)
    assert (ck["global_step"], ck["epoch"], ck["batch_in_epoch"]) == (20, 1, 4)
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert len(read_metrics(tmp_path)) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "optimizer step 22" in summary["error"]
    assert summary["epochs"] == 1


# --------------------------------------------------------------------------------------------
# resume (in-process; the SIGKILL test is in test_resume.py)


class _Crash(Exception):
    pass


def _crash(batch: Any) -> None:
    raise _Crash


@pytest.mark.parametrize(
    ("crash_at", "accum", "position"),  # crash as micro-batch crash_at (1-based) starts; the
    [(16, 1, (0, 15)), (41, 2, (2, 8)), (17, 1, (1, 0))],  # (epoch, batch) of the last checkpoint
)
def test_resume_after_crash_matches_uninterrupted(
    tmp_path: Path, crash_at: int, accum: int, position: tuple[int, int]
) -> None:
    cfg = tiny(epochs=3, checkpoint_every_steps=5, grad_accum=accum, schedule="cosine",
               optimizer="sgd", optimizer_kwargs={"momentum": 0.9}, model="cnn", width=4,
               dataset_options={"n_train": 128, "n_test": 32})
    ref = train(cfg, tmp_path / "ref")

    run = tmp_path / "run"
    ext = RunExtensions(batch_context=_AtMicroBatch(crash_at, _crash))
    with pytest.raises(_Crash):
        train(cfg, run, extensions=ext)
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    crashed = load_checkpoint(run / "checkpoints" / "last.pt")
    assert (crashed["epoch"], crashed["batch_in_epoch"]) == position
    resumed = train(cfg, run, resume=True)
    assert strip_times(read_metrics(run)) == strip_times(read_metrics(tmp_path / "ref"))
    assert {k: v for k, v in resumed.items() if k != "wall_time"} == {
        k: v for k, v in ref.items() if k != "wall_time"}
    a = load_checkpoint(run / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    assert_same_state(a["model"], b["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_resume_of_completed_run_returns_immediately(tmp_path: Path) -> None:
    first = train(tiny(), tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    again = train(tiny(), tmp_path, resume=True)
    assert again["final_test_acc"] == first["final_test_acc"] and again["epochs"] == 2
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before
    # constant schedule: the run may be extended
    longer = train(tiny(epochs=3), tmp_path, resume=True)
    assert longer["epochs"] == 3 and len(read_metrics(tmp_path)) == 3


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "torn')  # killed before any checkpoint
    summary = train(tiny(), tmp_path, resume=True)
    assert summary["status"] == "completed"
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    train(tiny(epochs=1), tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        train(tiny(epochs=1), tmp_path)


def test_resume_with_different_config_is_refused(tmp_path: Path) -> None:
    train(tiny(epochs=1), tmp_path)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"lr: 0.05 -> 0.1"):
        train(tiny(epochs=1, lr=0.1), tmp_path, resume=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    # fields that do not change the trajectory may differ
    train(tiny(epochs=1, eval_batch_size=7, checkpoint_every_steps=3), tmp_path, resume=True)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_resume_from_corrupt_checkpoint_leaves_run_untouched(tmp_path: Path, damage: str) -> None:
    train(tiny(epochs=1), tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"junk" * 100)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=str(ckpt)):
        train(tiny(epochs=2), tmp_path, resume=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize("optimizer", ["trsgd", "tradam", "tr-adamw", "lookahead-sgd"])
def test_resume_is_exact_for_tamegrad_optimizers(tmp_path: Path, optimizer: str) -> None:
    """Optimizer state (trajectory anchors, slow weights, ...) survives a checkpoint exactly."""
    from tamegrad.optim import list_optimizers

    if optimizer not in list_optimizers():
        pytest.skip(f"{optimizer} not registered")
    lr = 0.05 if "sgd" in optimizer else 0.003
    cfg = tiny(optimizer=optimizer, lr=lr, weight_decay=1e-4, checkpoint_every_steps=5,
               dataset_options={"n_train": 128, "n_test": 32, "as_vectors": True})
    train(cfg, tmp_path / "ref")
    ext = RunExtensions(batch_context=_AtMicroBatch(12, _crash))  # last checkpoint: step 10
    with pytest.raises(_Crash):
        train(cfg, tmp_path / "run", extensions=ext)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["global_step"] == 10
    train(cfg, tmp_path / "run", resume=True)
    assert strip_times(read_metrics(tmp_path / "run")) == strip_times(
        read_metrics(tmp_path / "ref"))
    assert_same_state(model_state(tmp_path / "run"), model_state(tmp_path / "ref"))


def test_module_entry_point(tmp_path: Path, capsys) -> None:
    from tamegrad.train.__main__ import main

    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny(epochs=1).to_dict()))
    assert main(["--config-json", str(cfg_file), "--run-dir", str(tmp_path / "run"),
                 "--no-progress", "--log-level", "WARNING"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["status"] == "completed"
    # resume of a finished run is a no-op that succeeds
    assert main(["--config-json", str(cfg_file), "--run-dir", str(tmp_path / "run"),
                 "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    cfg_file.write_text(json.dumps({"batch_size": 0}))
    assert main(["--config-json", str(cfg_file), "--run-dir", str(tmp_path / "bad")]) == 1
    assert "batch_size" in capsys.readouterr().err


def test_augmentation_only_for_rgb_32x32_images() -> None:
    from tamegrad.data import Augment, load_dataset

    cifar_like = load_dataset("synthetic", image_size=32, n_train=8, n_test=8)
    aug = augment_for(TrainConfig(), cifar_like)
    assert isinstance(aug, Augment) and aug.crop_padding == 4 and aug.hflip
    assert augment_for(TrainConfig(augment=False), cifar_like) is None
    digits_like = load_dataset("synthetic", image_size=8, channels=1, n_train=8, n_test=8)
    assert augment_for(TrainConfig(), digits_like) is None
    vectors = load_dataset("synthetic", as_vectors=True, n_train=8, n_test=8)
    assert augment_for(TrainConfig(), vectors) is None


def test_resume_restores_the_thread_count_results_depend_on(tmp_path: Path, caplog) -> None:
    """Issue 16.2: intra-op threads change float rounding; the checkpoint records the count and
    a resumed run uses it (a plain resume in a process with another count used to differ)."""
    cfg = tiny(dataset_options={"n_train": 96, "n_test": 16, "image_size": 16}, model="cnn",
               width=8, batch_size=32, epochs=1, checkpoint_every_steps=1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        train(cfg, tmp_path / "ref")
        with pytest.raises(_Crash):
            train(cfg, tmp_path / "run",
                  extensions=RunExtensions(batch_context=_AtMicroBatch(2, _crash)))
        torch.set_num_threads(1)
        with caplog.at_level(logging.WARNING, logger="tamegrad.train"):
            train(cfg, tmp_path / "run", resume=True)
        assert torch.get_num_threads() == 2
        assert "2 intra-op threads" in caplog.text
        assert_same_state(model_state(tmp_path / "run"), model_state(tmp_path / "ref"))
        # the control: the same resume at 1 thread ends elsewhere (so the test can fail)
        with pytest.raises(_Crash):
            train(cfg, tmp_path / "ctl",
                  extensions=RunExtensions(batch_context=_AtMicroBatch(2, _crash)))
        ckpt = tmp_path / "ctl" / "checkpoints" / "last.pt"
        data = load_checkpoint(ckpt)
        data["env"]["threads"] = 1
        save_checkpoint(ckpt, data)
        torch.set_num_threads(1)
        train(cfg, tmp_path / "ctl", resume=True)
        ref, ctl = model_state(tmp_path / "ref"), model_state(tmp_path / "ctl")
        assert any(not torch.equal(ref[k], ctl[k]) for k in ref)
    finally:
        torch.set_num_threads(before)


def test_bad_input_found_at_setup_writes_no_run_folder(tmp_path: Path) -> None:
    """A library caller whose run fails while setting up gets no (empty) run folder."""
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="nope"):
        train(tiny(dataset="nope"), run)
    with pytest.raises(ValueError):
        train(tiny(optimizer="sgd", optimizer_kwargs={"not_an_option": 1}), run)
    assert not run.exists()
