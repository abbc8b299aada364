"""Stage 2 of a learning-rate sweep (``experiments.runner.seed_stage``, ``reproduce --best-of``):
each family's best lr, including one that ``--extend-edges`` added, runs on more seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tamegrad.experiments import extend_sweeps, prepare_suite, seed_stage
from tamegrad.train.compare import run_grid
from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import run_dir_for, write_grid

SUITE, PROFILE = "gssgd-cifar10", "smoke"


def _train_rising_with_lr(config: TrainConfig, run_dir: Path, *, resume: bool = False,
                          progress: bool | None = None) -> dict[str, Any]:
    """A finished run whose test accuracy grows with the lr (so the best lr sits at the top
    edge) and with the seed; writes the files a real run leaves, plus a checkpoint."""
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    acc = min(0.99, 0.1 + 100 * config.lr) + 0.001 * config.seed
    row = {"epoch": 1, "step": 10, "lr": config.lr, "train_loss": 1.0, "train_acc": acc,
           "test_loss": 1.0, "test_acc": acc, "epoch_time": 0.1, "wall_time": 0.1}
    (run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    summary = {"status": "completed", "final_test_acc": acc, "best_test_acc": acc,
               "final_train_loss": 1.0, "wall_time": 0.1, "epochs": config.epochs}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


def _run(out: Path, only: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    base, entries, grid_seeds = prepare_suite(SUITE, PROFILE, out, only=only, seeds=seeds)
    return run_grid(base, entries, grid_seeds, out, train_fn=_train_rising_with_lr)


def test_best_lr_added_by_an_edge_extension_runs_in_the_seed_stage(tmp_path: Path) -> None:
    sweep, seeds = tmp_path / "sweep", tmp_path / "seeds"
    write_grid(sweep, *prepare_suite(SUITE, PROFILE, sweep))  # the whole sweep, as planned
    _run(sweep, ["GSSGD lr="], [0])  # the GSSGD sweeps at both batch sizes: best at the top
    added = extend_sweeps(SUITE, PROFILE, sweep)
    assert added == ["GSSGD lr=1.8e-3 b128", "GSSGD lr=4.5e-4 b8"]
    _run(sweep, ["GSSGD lr="], [0])
    _run(sweep, ["SGD lr=0.07 b128"], [0])  # one point of another sweep: it is incomplete

    with pytest.raises(ValueError, match=r"SGD b128 are not complete"):
        seed_stage(sweep, seeds)  # strict: every sweep must be complete
    assert not seeds.exists()
    labels = seed_stage(sweep, seeds, require_complete=False)
    assert labels == ["GSSGD lr=1.8e-3 b128", "GSSGD lr=4.5e-4 b8"]  # the extensions won
    meta = json.loads((seeds / "suite.json").read_text())
    assert (meta["suite"], meta["profile"]) == (SUITE, PROFILE)
    assert {"family": "GSSGD", "batch_size": 128, "lr": 1.8e-3} in meta["extensions"]
    copied = run_dir_for(seeds, labels[0], 0)
    assert (copied / "summary.json").is_file() and not (copied / "checkpoints").exists()

    # the seeds folder knows the extended entries, skips the copied seed 0, runs seeds 1 and 2
    records = _run(seeds, labels, [0, 1, 2])
    actions = sorted((r["label"], r["seed"], r["action"]) for r in records)
    assert actions == [(lab, s, "skipped" if s == 0 else "ran")
                       for lab in sorted(labels) for s in (0, 1, 2)]
    assert seed_stage(sweep, seeds, require_complete=False) == labels  # again: nothing new


def test_seed_stage_refuses_foreign_or_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no suite"):
        seed_stage(tmp_path / "nothing", tmp_path / "seeds")
    sweep = tmp_path / "sweep"
    write_grid(sweep, *prepare_suite(SUITE, PROFILE, sweep))
    _run(sweep, ["SGD lr=0.07 b128"], [0])
    with pytest.raises(ValueError, match="no learning-rate sweep is complete"):
        seed_stage(sweep, tmp_path / "seeds", require_complete=False)
    with pytest.raises(ValueError, match="folder of its own"):
        seed_stage(sweep, sweep)
    other = tmp_path / "other"
    prepare_suite("gssgd-shakespeare", PROFILE, other)
    _run(sweep, ["SGD lr="], [0])
    with pytest.raises(ValueError, match="holds results of gssgd-shakespeare"):
        seed_stage(sweep, other, require_complete=False)


def test_reproduce_best_of_refuses_a_sweep_of_another_suite_or_extension(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tamegrad.cli import main

    sweep = tmp_path / "sweep"
    write_grid(sweep, *prepare_suite(SUITE, PROFILE, sweep))
    _run(sweep, ["GSSGD lr="], [0])
    seeds = str(tmp_path / "seeds")
    for extra, message in (
        (["gssgd-shakespeare"], "holds gssgd-cifar10 profile smoke results, not "
                                "gssgd-shakespeare smoke"),
        ([SUITE, "--extend-edges"], "without --extend-edges"),
        ([SUITE, "--only", "Adam"], "matches none of the best lrs"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["reproduce", *extra, "--out", seeds, "--best-of", str(sweep)])
        assert info.value.code == 2
        assert message in capsys.readouterr().err
