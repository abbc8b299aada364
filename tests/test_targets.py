"""Time to target (train/targets.py) on hand-made metrics rows and grid folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry, run_dir_for, write_grid
from tamegrad.train.targets import (
    Target,
    first_reached,
    format_target_table,
    plot_against,
    run_hit,
    target_rows,
)


def _rows(accs: list[float], *, seconds: float = 10.0, steps: int = 100) -> list[dict[str, float]]:
    return [{"epoch": e + 1, "step": steps * (e + 1), "wall_time": seconds * (e + 1),
             "test_acc": a, "test_loss": 2.0 - a} for e, a in enumerate(accs)]


def test_interpolated_crossing() -> None:
    hit = first_reached(_rows([0.2, 0.4, 0.6, 0.8]), Target("test_acc", 0.5))
    assert hit is not None and hit.interpolated
    # between epoch 2 (0.4) and 3 (0.6): halfway
    assert hit.epoch == pytest.approx(2.5) and hit.step == pytest.approx(250)
    assert hit.seconds == pytest.approx(25.0)
    assert (hit.row_epoch, hit.row_step, hit.row_seconds) == (3, 300, 30.0)


def test_exact_hit_and_first_row() -> None:
    hit = first_reached(_rows([0.2, 0.5, 0.7]), Target("test_acc", 0.5))
    assert hit is not None and hit.epoch == pytest.approx(2.0) and hit.seconds == 20.0
    first = first_reached(_rows([0.6, 0.7]), Target("test_acc", 0.5))
    assert first is not None and not first.interpolated and first.epoch == 1.0
    assert first.seconds == 10.0


def test_not_reached_and_dip() -> None:
    assert first_reached(_rows([0.2, 0.3]), Target("test_acc", 0.5)) is None
    hit = first_reached(_rows([0.2, 0.6, 0.3, 0.9]), Target("test_acc", 0.5))
    assert hit is not None and hit.row_epoch == 2  # the first crossing counts


def test_lower_is_better_and_uneven_time() -> None:
    rows = [{"epoch": 1, "step": 10, "wall_time": 5.0, "test_bpc": 3.0},
            {"epoch": 2, "step": 20, "wall_time": 25.0, "test_bpc": 2.0},
            {"epoch": 3, "step": 30, "wall_time": 30.0, "test_bpc": 1.0}]
    target = Target("test_bpc", 2.5)
    assert target.lower_is_better and target.describe() == "test_bpc <= 2.5"
    hit = first_reached(rows, target)
    assert hit is not None
    assert hit.epoch == pytest.approx(1.5) and hit.seconds == pytest.approx(15.0)
    # rows without the metric or an axis are skipped
    assert first_reached([{"epoch": 1, "test_bpc": 1.0}], target) is None


def test_bad_target() -> None:
    with pytest.raises(ValueError, match="value"):
        Target("test_acc", float("nan"))
    with pytest.raises(ValueError, match="metric"):
        Target("", 0.5)


def _grid(tmp_path: Path) -> Path:
    out = tmp_path / "grid"
    entries = [GridEntry("uniform", "sgd", 0.1), GridEntry("priority", "sgd", 0.1)]
    base = TrainConfig(batch_size=50)
    write_grid(out, base, entries, [0, 1, 2])
    curves = {
        "uniform": [[0.2, 0.4, 0.6], [0.2, 0.5, 0.7], [0.1, 0.3, 0.45]],  # seed 2 never reaches
        "priority": [[0.3, 0.6, 0.7], [0.5, 0.6, 0.7], None],  # seed 2 not finished
    }
    for label, runs in curves.items():
        for seed, accs in enumerate(runs):
            run = run_dir_for(out, label, seed)
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps(base.to_dict()))
            if accs is None:
                (run / "summary.json").write_text(json.dumps({"status": "running"}))
                continue
            with open(run / "metrics.jsonl", "w") as fh:
                for row in _rows(accs, seconds=20.0 if label == "priority" else 10.0):
                    fh.write(json.dumps(row) + "\n")
            (run / "summary.json").write_text(json.dumps({"status": "completed"}))
    return out


def test_table_over_seeds(tmp_path: Path) -> None:
    out = _grid(tmp_path)
    target = Target("test_acc", 0.5)
    assert run_hit(run_dir_for(out, "uniform", 0), target) is not None
    rows = {r["label"]: r for r in target_rows(out, target)}
    uni, pri = rows["uniform"], rows["priority"]
    assert (uni["n_completed"], uni["n_reached"], uni["seeds_reached"]) == (3, 2, [0, 1])
    assert uni["epoch_values"] == pytest.approx([2.5, 2.0])
    assert uni["seconds_mean"] == pytest.approx(22.5)
    assert uni["final_mean"] == pytest.approx((0.6 + 0.7 + 0.45) / 3)
    assert (pri["n_completed"], pri["n_reached"]) == (2, 2)
    # priority seed 0: 0.3 -> 0.6 crosses at 1 + 2/3 epochs, 20 s per epoch; seed 1 at epoch 1
    assert pri["seconds_values"] == pytest.approx([20 * 5 / 3, 20.0])
    assert uni["samples_per_second_mean"] == pytest.approx(100 * 50 / 10.0)
    table = format_target_table(list(rows.values()), target, reference="uniform")
    assert "| uniform | 58.33 ± 12.58 | 2/3 | 2.25 ± 0.35 |" in table
    assert "seconds to target" in table and "speed-up vs uniform" in table
    ratio = 22.5 / ((20 * 5 / 3 + 20.0) / 2)
    assert f"{ratio:.2f}x" in table


def test_plot_against_axes(tmp_path: Path) -> None:
    out = _grid(tmp_path)
    paths = plot_against(out, tmp_path / "figs" / "curves", title="t",
                         target=Target("test_acc", 0.5), axes=("epoch", "step", "wall_time"))
    assert [p.name for p in paths] == ["curves_epoch.png", "curves_step.png",
                                       "curves_wall_time.png"]
    for p in paths:
        with Image.open(p) as img:
            assert img.size[0] > 500
    from tamegrad.train.plot import _series

    runs = [_rows([0.2, 0.4], seconds=10.0), _rows([0.4, 0.6], seconds=30.0)]
    xs, mean, lo, hi = _series(runs, "test_acc", 1.0, "wall_time")
    assert xs == pytest.approx([20.0, 40.0]) and mean == pytest.approx([0.3, 0.5])
    assert lo == pytest.approx([0.2, 0.4]) and hi == pytest.approx([0.4, 0.6])
    with pytest.raises(ValueError, match="x="):
        plot_against(out, tmp_path / "bad", axes=("minutes",))
