"""Training-curve figures from run folders and grid folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tamegrad.train.plot import discover_runs, plot_runs, split_experiments


def _fake_run(run_dir: Path, *, dataset: str = "synthetic", acc: float = 0.5,
              epochs: int = 3, with_acc: bool = True, **config: object) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"dataset": dataset, **config}))
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for e in range(1, epochs + 1):
            rec = {"epoch": e, "train_loss": 2.0 / e, "test_loss": 2.2 / e}
            if with_acc:
                rec.update(train_acc=acc + 0.05 * e, test_acc=acc + 0.04 * e)
            fh.write(json.dumps(rec) + "\n")
        fh.write('{"epoch": 4, "train_lo')  # torn last line is ignored


def test_plot_grid_dir(tmp_path: Path) -> None:
    grid = tmp_path / "grid"
    for label in ("sgd", "trsgd"):
        for seed in (0, 1):
            _fake_run(grid / label / f"seed{seed}", acc=0.4 + 0.1 * seed)
    (grid / "grid.json").write_text(json.dumps({"entries": [{"label": "trsgd"},
                                                            {"label": "sgd"}]}))
    found = discover_runs([grid])
    assert list(found) == ["trsgd", "sgd"] and all(len(v) == 2 for v in found.values())
    out = plot_runs(grid, tmp_path / "fig" / "curves.png", title="test")
    with Image.open(out) as img:
        assert img.size[0] > 500 and img.size[1] > 400
    assert out.stat().st_size < 400_000


def test_plot_single_runs_and_text(tmp_path: Path) -> None:
    _fake_run(tmp_path / "lstm" / "seed0", dataset="tinyshakespeare", with_acc=False)
    _fake_run(tmp_path / "other_run", epochs=1)
    found = discover_runs([tmp_path / "lstm" / "seed0", tmp_path / "other_run"])
    assert list(found) == ["lstm", "other_run"]
    out = plot_runs([tmp_path / "lstm"], tmp_path / "text.png", band="std")
    assert out.is_file()
    plot_runs([tmp_path / "lstm" / "seed0", tmp_path / "other_run"], tmp_path / "mix.png")
    assert (tmp_path / "mix.png").is_file()


def test_plot_nothing_to_draw(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        plot_runs(tmp_path / "empty", tmp_path / "x.png")
    with pytest.raises(FileNotFoundError):
        plot_runs(tmp_path / "missing", tmp_path / "x.png")


def test_runs_of_different_experiments_are_never_pooled(tmp_path: Path) -> None:
    """Issue 16.5: two grids with the same labels but other data/model are kept apart."""
    for seed in (0, 1):
        _fake_run(tmp_path / "a" / "SGD" / f"seed{seed}", dataset="digits", model="mlp",
                  seed=seed, device="cpu")
        _fake_run(tmp_path / "b" / "SGD" / f"seed{seed}", dataset="cifar10-jpeg",
                  model="resnet18", seed=seed, device="cuda")
    # same experiment, other seed and device: pooled
    _fake_run(tmp_path / "c" / "SGD" / "seed2", dataset="digits", model="mlp", seed=2,
              device="cuda")
    found = discover_runs([tmp_path / "a", tmp_path / "b"])
    assert {k: len(v) for k, v in found.items()} == {"SGD": 4}
    split = split_experiments(found)
    assert sorted(split) == ["SGD [dataset=cifar10-jpeg, model=resnet18]",
                             "SGD [dataset=digits, model=mlp]"]
    assert all(len(v) == 2 for v in split.values())
    pooled = split_experiments(discover_runs([tmp_path / "a", tmp_path / "c"]))
    assert {k: len(v) for k, v in pooled.items()} == {"SGD": 3}
    assert plot_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "two.png").is_file()
