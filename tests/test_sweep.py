"""Reading a learning-rate sweep (tamegrad.train.sweep): best lr per family, edges, gaps."""

from __future__ import annotations

from typing import Any

import pytest

from tamegrad.train.sweep import (
    SweepPoint,
    best_per_family,
    format_best_table,
    is_sweep,
    plot_sweep,
    sweep_label,
    sweep_point,
    sweep_points,
)


def _row(family: str | None, lr: float, batch: int, values: list[float],
         key: str = "final_test_acc") -> dict[str, Any]:
    """A summarize() row of sweep point (family, lr, batch); family None: not a sweep point."""
    import statistics

    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else None
    label = sweep_label(family, f"{lr:g}", batch) if family else f"plain {lr:g}"
    return {"label": label, "family": family, "lr": lr, "batch_size": batch, "n": len(values),
            f"{key}_mean": mean, f"{key}_std": std, f"{key}_values": values}


def test_sweep_points_come_from_row_fields_not_labels():
    row = _row("Clipped SGD c=2", 0.167, 8, [0.5])
    assert sweep_point(row) == SweepPoint("Clipped SGD c=2", 0.167, 8)
    # the label is for people: a misleading one does not change the point
    assert sweep_point({**row, "label": "GSSGD lr=9 b128"}) == SweepPoint("Clipped SGD c=2",
                                                                           0.167, 8)
    assert sweep_point(_row(None, 0.1, 8, [0.5])) is None


def test_best_lr_per_family_and_batch_with_edge_flag():
    rows = [
        _row("A", 0.1, 128, [0.50]), _row("A", 0.3, 128, [0.60]),
        _row("A", 0.9, 128, [0.55]),
        _row("B", 1, 128, [0.40]), _row("B", 3, 128, [0.45]), _row("B", 9, 128, [0.70]),
        _row("A", 0.025, 8, [0.30, 0.34]), _row("A", 0.075, 8, []),
        _row("A", 0.225, 8, [0.20]),
    ]
    assert is_sweep(rows)
    best = {(b["batch_size"], b["family"]): b for b in best_per_family(rows)}
    a128, b128, a8 = best[(128, "A")], best[(128, "B")], best[(8, "A")]
    assert (a128["best_lr"], a128["mean"], a128["at_edge"]) == (0.3, 0.60, False)
    assert (b128["best_lr"], b128["at_edge"]) == (9.0, True)  # optimum not bracketed
    assert a8["best_lr"] == 0.025 and a8["n"] == 2 and a8["mean"] == pytest.approx(0.32)
    assert a8["complete"] is False and a8["lrs"] == [0.025, 0.075, 0.225]
    table = format_best_table(list(best.values()))
    lines = table.splitlines()
    # within batch 128, the better family comes first
    assert lines.index(next(x for x in lines if "| 128 | B |" in x)) < lines.index(
        next(x for x in lines if "| 128 | A |" in x))
    assert "at the edge of the sweep" in next(x for x in lines if "| 128 | B |" in x)
    assert "sweep incomplete" in next(x for x in lines if "| 8 | A |" in x)
    assert "32.00 ± 2.83" in table


def test_lower_is_better_for_bits_per_character_and_divergence_is_reported():
    rows = [
        _row("L", 1, 8, [2.1], "final_test_bpc"),
        _row("L", 3, 8, [1.9], "final_test_bpc"),
        {**_row("L", 9, 8, [], "final_test_bpc"), "n": 1},
    ]
    (best,) = best_per_family(rows)
    assert best["metric"] == "final_test_bpc" and best["higher_is_better"] is False
    assert best["best_lr"] == 3.0 and best["at_edge"] is False
    assert best["diverged"] == ["L lr=9 b8"]
    assert "1.900" in format_best_table([best]) and "diverged" in format_best_table([best])


def test_non_sweep_labels_are_refused():
    rows = [_row(None, 0.1, 8, [0.5])]
    assert not is_sweep(rows)
    with pytest.raises(ValueError, match="not a sweep point"):
        best_per_family(rows)


def test_a_failed_run_counts_as_diverged_not_as_missing():
    failed = _row("L", 9, 8, [])
    failed["missing"] = [{"seed": 0, "status": "failed",
                          "detail": "failed: NonFiniteLossError: loss is nan"}]
    running = _row("L", 3, 8, [])
    running["missing"] = [{"seed": 0, "status": "running", "detail": "unfinished"}]
    (best,) = best_per_family([_row("L", 1, 8, [0.4]), running, failed])
    assert best["diverged"] == ["L lr=9 b8"]
    assert best["complete"] is False  # lr=3 is still running
    (best,) = best_per_family([_row("L", 1, 8, [0.4]), failed])
    assert best["complete"] is True and best["best_lr"] == 1.0
    assert "sweep incomplete" not in format_best_table([best])


def test_sweep_points_per_batch_and_family_sorted_by_lr():
    rows = [_row("A", 0.9, 128, [0.55]), _row("A", 0.1, 128, [0.50]),
            _row("A", 0.3, 8, []), _row("B", 1, 8, [0.4])]
    points = sweep_points(rows)
    assert points[128]["A"] == [(0.1, 0.50), (0.9, 0.55)]
    assert points[8]["A"] == [(0.3, None)] and points[8]["B"] == [(1.0, 0.4)]


def test_plot_sweep_draws_one_panel_per_family_with_diverged_points(tmp_path):
    failed = _row("A", 0.9, 8, [])
    failed["missing"] = [{"seed": 0, "status": "failed", "detail": "loss is nan"}]
    rows = [_row("A", 0.1, 128, [0.5]), _row("A", 0.3, 128, [0.6]),
            _row("B", 1e-4, 128, [0.55]), _row("B", 3e-4, 128, [0.65]),
            _row("A", 0.1, 8, [0.3]), _row("A", 0.3, 8, [0.35]), failed]
    png = plot_sweep(tmp_path, "demo", rows)
    assert png == tmp_path / "sweep.png" and png.stat().st_size > 10_000
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 1.8 * height  # two families: two panels side by side
