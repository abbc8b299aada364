"""``TrainConfig.init_from``: a run starts from another run's weights; a mismatched
architecture, an unfinished or missing run are refused with the path and the difference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tamegrad.data import load_dataset
from tamegrad.train import TrainConfig
from tamegrad.train.build import build_model
from tamegrad.train.checkpoint import load_checkpoint
from tamegrad.train.run_folder import RunFolder
from tamegrad.train.trainer import train


def _config(**changes: object) -> TrainConfig:
    base = TrainConfig(dataset="digits", model="mlp", width=16, epochs=1, batch_size=64,
                       limit_train_batches=2, device="cpu", lr=0.1, seed=0)
    return dataclasses.replace(base, **changes).validate()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("init") / "pre"
    train(_config(), run, progress=False)
    return run


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(RunFolder(run).checkpoint_path)["model"]  # type: ignore[no-any-return]


def test_model_starts_from_the_checkpoint_weights(pretrained: Path) -> None:
    ds = load_dataset("digits")
    fresh = build_model(_config(seed=1), ds, torch.device("cpu"))
    stored = _weights(pretrained)
    assert any(not torch.equal(v, stored[k]) for k, v in fresh.state_dict().items())
    for init in (str(pretrained), str(RunFolder(pretrained).checkpoint_path)):  # folder or file
        torch.manual_seed(123)
        model = build_model(_config(seed=1, init_from=init), ds, torch.device("cpu"))
        for k, v in model.state_dict().items():
            assert torch.equal(v, stored[k]), k


def test_fine_tune_run_continues_from_the_weights(pretrained: Path, tmp_path: Path) -> None:
    # lr 0: the fine-tuned run evaluates exactly the pre-trained model
    summary = train(_config(init_from=str(pretrained), lr=0.0), tmp_path / "ft", progress=False)
    pre = RunFolder(pretrained).read_summary()
    assert pre is not None
    assert summary["final_test_acc"] == pytest.approx(pre["final_test_acc"])
    # ... and a conversion still applies after the weights are loaded
    cfg = _config(init_from=str(pretrained), estimator="rad", keep_frac=0.5)
    train(cfg, tmp_path / "ft_rad", progress=False)


def test_mismatched_architecture_is_refused(pretrained: Path) -> None:
    ds = load_dataset("digits")
    with pytest.raises(ValueError, match=r"architecture differs \(width: 16 there, 32 here"):
        build_model(_config(width=32, init_from=str(pretrained)), ds, torch.device("cpu"))
    with pytest.raises(ValueError, match="model_options"):
        build_model(_config(model_options={"hidden": [16, 16]}, init_from=str(pretrained)),
                    ds, torch.device("cpu"))


def test_shape_mismatch_is_refused_without_stored_config(pretrained: Path,
                                                         tmp_path: Path) -> None:
    ckpt = load_checkpoint(RunFolder(pretrained).checkpoint_path)
    del ckpt["config"]  # a checkpoint without its config: the weights' shapes still decide
    path = tmp_path / "bare.pt"
    torch.save({"format": "tamegrad-checkpoint", "version": 1, **ckpt}, path)
    ds = load_dataset("digits")
    with pytest.raises(ValueError, match="shapes differ"):
        build_model(_config(width=32, init_from=str(path)), ds, torch.device("cpu"))


def test_missing_or_unfinished_runs_are_refused(pretrained: Path, tmp_path: Path) -> None:
    ds = load_dataset("digits")
    with pytest.raises(ValueError, match="no run folder or checkpoint file"):
        build_model(_config(init_from=str(tmp_path / "nope")), ds, torch.device("cpu"))
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="is running, not completed"):
        build_model(_config(init_from=str(half)), ds, torch.device("cpu"))


def test_init_from_is_validated_and_a_trajectory_field() -> None:
    with pytest.raises(ValueError, match="init_from"):
        _config(init_from="")
    a, b = _config(init_from="x"), _config(init_from="y")
    assert a.resume_differences(b) == ["init_from: 'y' -> 'x'"]
    assert TrainConfig.from_dict(a.to_dict()).init_from == "x"
