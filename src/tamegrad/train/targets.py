"""Time to a target: the epochs, optimizer steps and seconds a run needs to reach a metric value
fixed in advance, per run and as a table over a grid's seeds, plus curves against seconds.

A :class:`Target` is a metrics-row key and a value: ``Target("test_acc", 0.45)`` is reached
when the test accuracy (a fraction, as in ``metrics.jsonl``) is >= 0.45; metrics whose name
ends in ``loss`` or ``bpc`` (``Target("test_bpc", 1.6)``) are reached when <= the value.

**What "seconds" are.** The metrics rows' ``wall_time``: the trainer's cumulative seconds
since the training loop started (``RunState.elapsed()``, summed over the sessions of a resumed
run), read after the epoch's evaluation. It therefore includes every training step (data
loading, forward, backward, optimizer step), everything a sampler does inside the loop (its
draws, the per-step ``update`` with its all-gather, any scoring it runs), the metric folds,
the test-set evaluation of every epoch so far and the checkpoint writes of the previous epochs.
It excludes set-up before the loop (loading the data set, building the model) and the time
between the last checkpoint and a crash. Evaluation is counted for every arm alike; it is a
fixed cost per epoch, so it favours no sampler at equal epochs, but it makes "seconds to
target" depend on how often a run is evaluated (once per epoch here).

**Crossing rule: linear interpolation.** Runs are evaluated once per epoch, so "the first
epoch that reached the target" has the resolution of one epoch (10% of a 10-epoch run),
too coarse to compare samplers whose difference may be a fraction of an epoch. Between the last
evaluation below the target (row a) and the first one reaching it (row b), the crossing is
placed at ``f = (target - m_a) / (m_b - m_a)`` and each of epoch, step and seconds is
``x_a + f (x_b - x_a)``. This assumes the metric changes linearly between two evaluations;
it is an estimate, not a measurement (the first-reached row is kept in
:class:`TargetHit` as ``row_*`` for the coarse answer). When the first evaluated row already
reaches the target there is no earlier point to interpolate from (the metric before training
is not recorded): the row's own values are returned (``interpolated=False``). A run that
reaches the target and later drops below it still counts at its first crossing. A run that never
reaches it has no hit (None); tables count such seeds separately and never average them in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamegrad.train.grid import read_grid, run_dir_for
from tamegrad.train.run_folder import RunFolder

__all__ = [
    "Target",
    "TargetHit",
    "first_reached",
    "format_target_table",
    "plot_against",
    "run_hit",
    "target_rows",
]

#: Row keys a crossing is reported on.
_AXES = ("epoch", "step", "wall_time")


@dataclass(frozen=True)
class Target:
    """A metric value fixed in advance. ``lower_is_better`` is derived from the name (keys
    ending in ``loss`` or ``bpc``) unless given."""

    metric: str
    value: float
    lower_is_better: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"metric={self.metric!r} (must be a non-empty metrics key)")
        if not isinstance(self.value, (int, float)) or not math.isfinite(float(self.value)):
            raise ValueError(f"value={self.value!r} (must be a finite number)")
        if self.lower_is_better is None:
            lower = self.metric.endswith(("loss", "bpc"))
            object.__setattr__(self, "lower_is_better", lower)

    def reached(self, value: float) -> bool:
        """Whether ``value`` of the metric meets the target."""
        return value <= self.value if self.lower_is_better else value >= self.value

    def describe(self) -> str:
        """``"test_acc >= 0.45"``."""
        return f"{self.metric} {'<=' if self.lower_is_better else '>='} {self.value:g}"


@dataclass(frozen=True)
class TargetHit:
    """Where a run first reached a target: interpolated ``epoch``, ``step``, ``seconds``
    (see the module docstring) and the first row that reached it (``row_*``)."""

    epoch: float
    step: float
    seconds: float
    row_epoch: int
    row_step: int
    row_seconds: float
    interpolated: bool


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def first_reached(rows: Sequence[dict[str, Any]], target: Target) -> TargetHit | None:
    """The first crossing of ``target`` in metrics ``rows`` (in epoch order), or None.

    Rows missing the metric, or any of ``epoch``/``step``/``wall_time``, are skipped.
    """
    prev: dict[str, float] | None = None
    for row in rows:
        vals = {k: _num(row.get(k)) for k in (target.metric, *_AXES)}
        if any(v is None for v in vals.values()):
            continue
        point: dict[str, float] = {k: float(v) for k, v in vals.items() if v is not None}
        m = point[target.metric]
        if target.reached(m):
            coarse = (int(point["epoch"]), int(point["step"]), point["wall_time"])
            if prev is None or prev[target.metric] == m:
                return TargetHit(point["epoch"], point["step"], point["wall_time"], *coarse,
                                 interpolated=False)
            f = (target.value - prev[target.metric]) / (m - prev[target.metric])
            f = min(max(f, 0.0), 1.0)
            at = {k: prev[k] + f * (point[k] - prev[k]) for k in _AXES}
            return TargetHit(at["epoch"], at["step"], at["wall_time"], *coarse, interpolated=True)
        prev = point
    return None


def run_hit(run_dir: Path | str, target: Target) -> TargetHit | None:
    """:func:`first_reached` over the run folder's ``metrics.jsonl``."""
    return first_reached(RunFolder(run_dir).read_metrics(), target)


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def target_rows(out_dir: Path | str, target: Target) -> list[dict[str, Any]]:
    """One row per grid entry: how its completed seeds reach ``target``.

    Keys: ``label, n_completed, n_reached, seeds_reached, final`` (mean, std of the metric's
    last value over completed seeds) and for ``epoch``, ``step``, ``seconds`` the keys
    ``<axis>_mean``, ``<axis>_std`` (sample std; None below 2 values) and ``<axis>_values``
    over the seeds that reached the target (None when none did). Also
    ``samples_per_second_mean``: training examples per second over the whole run (steps x
    global batch / final ``wall_time``; evaluation included in the seconds), when the config
    gives the batch.
    """
    out = Path(out_dir)
    grid = read_grid(out)
    rows: list[dict[str, Any]] = []
    for entry in grid.entries:
        hits: dict[str, list[float]] = {"epoch": [], "step": [], "seconds": []}
        finals: list[float] = []
        rates: list[float] = []
        completed, reached = 0, []
        for seed in grid.seeds:
            folder = RunFolder(run_dir_for(out, entry.label, seed))
            if folder.status() != "completed":
                continue
            completed += 1
            metrics = folder.read_metrics()
            last = metrics[-1] if metrics else {}
            final = _num(last.get(target.metric))
            if final is not None:
                finals.append(final)
            rate = _samples_per_second(folder, last)
            if rate is not None:
                rates.append(rate)
            hit = first_reached(metrics, target)
            if hit is None:
                continue
            reached.append(seed)
            hits["epoch"].append(hit.epoch)
            hits["step"].append(hit.step)
            hits["seconds"].append(hit.seconds)
        row: dict[str, Any] = {"label": entry.label, "n_completed": completed,
                               "n_reached": len(reached), "seeds_reached": reached,
                               "n_expected": len(grid.seeds)}
        row["final_mean"], row["final_std"] = _mean_std(finals)
        for axis, vals in hits.items():
            row[f"{axis}_mean"], row[f"{axis}_std"] = _mean_std(vals)
            row[f"{axis}_values"] = vals
        row["samples_per_second_mean"] = statistics.fmean(rates) if rates else None
        rows.append(row)
    return rows


def _samples_per_second(folder: RunFolder, last: dict[str, Any]) -> float | None:
    cfg = folder.read_config() or {}
    step, wall = _num(last.get("step")), _num(last.get("wall_time"))
    batch, accum = _num(cfg.get("batch_size")), _num(cfg.get("grad_accum", 1))
    if step is None or wall is None or batch is None or accum is None or wall <= 0:
        return None
    # batch_size is per process; a distributed run's rows do not record the world size, so this
    # is per process for those (multiply by the number of ranks).
    return step * batch * accum / wall


def _fmt(mean: float | None, std: float | None, digits: int, scale: float = 1.0) -> str:
    if mean is None:
        return "–"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def target_table_note(columns: str, details: str) -> str:
    """The paragraph under a :func:`format_target_table` table: how ``columns`` (e.g.
    "Steps/seconds") are aggregated, then the suite's ``details``."""
    return (
        f"{columns}: mean ± sample std over the seeds that reached the target (reached = "
        "k/completed), linearly interpolated between the two evaluations around the crossing "
        f"(`tamegrad.train.targets`). {details}"
    )


def format_target_table(rows: Sequence[dict[str, Any]], target: Target,
                        reference: str | None = None) -> str:
    """Markdown table of :func:`target_rows`: final metric, reached k/n, epochs, steps and
    seconds to target (mean ± sample std over the seeds that reached it), throughput, and
    with ``reference`` (a label) the ratio of the reference's mean seconds to each row's
    (> 1: faster than the reference)."""
    pct = target.metric.endswith("acc")
    scale = 100.0 if pct else 1.0
    unit = " (%)" if pct else ""
    ref = next((r for r in rows if r["label"] == reference), None)
    ref_s = ref["seconds_mean"] if ref is not None else None
    head = (f"| arm | final {target.metric.replace('_', ' ')}{unit} | reached | epochs to target "
            "| steps to target | seconds to target | samples/s |"
            + (f" speed-up vs {reference} (s) |" if ref is not None else ""))
    lines = [head, "|---" * (7 + (ref is not None)) + "|"]
    for r in rows:
        speed = ""
        if ref is not None:
            ok = ref_s is not None and r["seconds_mean"] is not None and r["seconds_mean"] > 0
            speed = f" {ref_s / r['seconds_mean']:.2f}x |" if ok else " – |"
        sps = r["samples_per_second_mean"]
        lines.append(
            f"| {r['label']} | {_fmt(r['final_mean'], r['final_std'], 2, scale)} "
            f"| {r['n_reached']}/{r['n_completed']} "
            f"| {_fmt(r['epoch_mean'], r['epoch_std'], 2)} "
            f"| {_fmt(r['step_mean'], r['step_std'], 0)} "
            f"| {_fmt(r['seconds_mean'], r['seconds_std'], 1)} "
            f"| {'–' if sps is None else f'{sps:.0f}'} |{speed}"
        )
    return "\n".join(lines)


def plot_against(
    runs: Path | str | Sequence[Path | str], out_prefix: Path | str, *,
    title: str | None = None, target: Target | None = None,
    axes: Sequence[str] = ("epoch", "wall_time"),
) -> list[Path]:
    """The 2x2 curves of :func:`tamegrad.train.plot.plot_runs` once per x axis, into
    ``<out_prefix>_<axis>.png`` (``epoch``, ``step``, ``wall_time``), with ``target`` drawn as
    a dashed line; returns the paths. ``FileNotFoundError`` when no run has metrics."""
    from tamegrad.train.plot import plot_runs

    prefix = Path(out_prefix)
    reference = {target.metric: target.value} if target is not None else None
    return [
        plot_runs(runs, prefix.with_name(f"{prefix.name}_{axis}.png"), title=title, x=axis,
                  reference=reference)
        for axis in axes
    ]
