"""Reading a learning-rate sweep: the best learning rate of each optimizer family.

A sweep grid's entries carry a ``family`` (:class:`~tamegrad.train.grid.GridEntry`): the points
of one sweep share family and batch size and differ in ``lr``; the rows of
:func:`~tamegrad.train.results.summarize` carry ``family``, ``batch_size`` and ``lr``, which is
all this module reads (labels, ``"<family> lr=<lr> b<batch>"`` by :func:`sweep_label`, are only
for people). Comparing optimizers fairly means comparing each family at its own best learning
rate, per batch size, and flagging a best that sits at the edge of its sweep: there the sweep
did not bracket the optimum and the family may be under-rated.

The selection uses the grid's own test metric (final test accuracy, or final test bits per
character for text), so with one seed it is optimistic for every family alike; confirm a close
call by rerunning the selected entries with more seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamegrad._atomic import atomic_write_text

from .grid import run_dir_for
from .results import summarize


@dataclass(frozen=True)
class SweepPoint:
    """Where a row sits in its sweep."""

    family: str
    lr: float
    batch_size: int


def round_lr(lr: float) -> float:
    """``lr`` rounded to 3 significant digits, so that a label shows the exact value."""
    return float(f"{lr:.3g}")


def format_lr(lr: float) -> str:
    """Short form for labels: ``2e-4``, ``1.67e-5``, ``0.07``, ``0.125``, ``50``."""
    if 0.01 <= lr < 1000:
        return f"{lr:.3g}"
    mantissa, exponent = f"{lr:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def sweep_label(family: str, lr: str, batch_size: int) -> str:
    """The label of one sweep point, ``"<family> lr=<lr> b<batch>"``; ``lr`` as it should read."""
    return f"{family} lr={lr} b{batch_size}"


def sweep_point(row: dict[str, Any]) -> SweepPoint | None:
    """The row's place in its sweep, or None for a row whose entry is not a sweep point."""
    family = row.get("family")
    if family is None:
        return None
    return SweepPoint(str(family), float(row["lr"]), int(row["batch_size"]))


def is_sweep(rows: Sequence[dict[str, Any]]) -> bool:
    """True when every row is a sweep point (its entry has a ``family``)."""
    return bool(rows) and all(sweep_point(r) is not None for r in rows)


def _metric(rows: Sequence[dict[str, Any]]) -> tuple[str, bool]:
    """``(metric key, higher is better)``: test bpc for text grids, else final test accuracy."""
    if any(r.get("final_test_bpc_values") for r in rows):
        return "final_test_bpc", False
    return "final_test_acc", True


def _diverged(row: dict[str, Any], metric: str) -> bool:
    """A sweep point that blew up: a run failed (the trainer stops a NaN/inf loss and marks the
    run "failed"), or finished runs left no finite metric."""
    failed = any(m.get("status") == "failed" for m in row.get("missing", []))
    return failed or (row["n"] > 0 and row.get(f"{metric}_mean") is None)


def _by_family(
    rows: Sequence[dict[str, Any]],
) -> dict[tuple[int, str], list[tuple[SweepPoint, dict[str, Any]]]]:
    """``(batch size, family) -> [(point, row)]`` in grid order; refuses non-sweep rows."""
    groups: dict[tuple[int, str], list[tuple[SweepPoint, dict[str, Any]]]] = {}
    for row in rows:
        point = sweep_point(row)
        if point is None:
            raise ValueError(f"not a sweep point: {row['label']!r} has no family")
        groups.setdefault((point.batch_size, point.family), []).append((point, row))
    return groups


def best_per_family(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (batch size, family): the sweep point with the best mean test metric.

    Returns rows in grid order of first appearance with keys ``batch_size, family, metric,
    higher_is_better, best_label, best_lr, lrs`` (the family's swept lrs, ascending), ``n``
    (seeds behind the best), ``mean, std``, ``at_edge`` (best lr is the lowest or highest of
    the sweep), ``complete`` (every sweep point has a finished or a diverged seed) and
    ``diverged`` (labels of points with a failed run, e.g. stopped on a NaN loss, or with no
    finite metric although finished).
    """
    metric, higher = _metric(rows)
    out: list[dict[str, Any]] = []
    for (batch, family), points in _by_family(rows).items():
        lrs = sorted(p.lr for p, _ in points)
        scored = [(p, r) for p, r in points if r.get(f"{metric}_mean") is not None]
        diverged = [r["label"] for _, r in points if _diverged(r, metric)]
        entry: dict[str, Any] = {
            "batch_size": batch, "family": family, "metric": metric,
            "higher_is_better": higher, "lrs": lrs,
            "complete": all(r["n"] > 0 or r["label"] in diverged for _, r in points),
            "diverged": diverged,
            "best_label": None, "best_lr": None, "n": 0, "mean": None, "std": None,
            "at_edge": None,
        }
        if scored:
            sign = 1.0 if higher else -1.0
            best_p, best_r = max(scored, key=lambda pr: sign * pr[1][f"{metric}_mean"])
            entry.update(
                best_label=best_r["label"], best_lr=best_p.lr, n=best_r["n"],
                mean=best_r[f"{metric}_mean"], std=best_r[f"{metric}_std"],
                at_edge=len(lrs) > 1 and best_p.lr in (lrs[0], lrs[-1]),
            )
        out.append(entry)
    return out


def format_best_table(best: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per (batch size, family), best first within each batch size."""
    if not best:
        return ""
    metric = best[0]["metric"]
    acc = metric == "final_test_acc"
    head = "final test acc (%)" if acc else "final test bpc"
    lines = [f"| batch | family | best lr | {head} | n | swept lrs | note |",
             "|---|---|---|---|---|---|---|"]
    batches = list(dict.fromkeys(b["batch_size"] for b in best))
    for batch in batches:
        rows = [b for b in best if b["batch_size"] == batch]
        sign = -1.0 if rows[0]["higher_is_better"] else 1.0
        rows.sort(key=lambda b: (b["mean"] is None, sign * (b["mean"] or 0.0)))
        for b in rows:
            if b["mean"] is None:
                value = "–"
            else:
                scale, digits = (100.0, 2) if acc else (1.0, 3)
                value = f"{b['mean'] * scale:.{digits}f}"
                if b["std"] is not None:
                    value += f" ± {b['std'] * scale:.{digits}f}"
            notes = []
            if b["at_edge"]:
                notes.append("at the edge of the sweep")
            if not b["complete"]:
                notes.append("sweep incomplete")
            if b["diverged"]:
                notes.append(f"{len(b['diverged'])} lr(s) diverged")
            lrs = ", ".join(format_lr(lr) for lr in b["lrs"])
            best_lr = "–" if b["best_lr"] is None else format_lr(b["best_lr"])
            lines.append(f"| {batch} | {b['family']} | {best_lr} | {value} | {b['n']} | {lrs} "
                         f"| {'; '.join(notes)} |")
    return "\n".join(lines)


def write_best(
    out_dir: Path | str, rows: Sequence[dict[str, Any]] | None = None
) -> str | None:
    """Write ``best.md`` for a sweep grid in ``out_dir``; None (nothing written) otherwise.

    ``rows`` are the grid's :func:`~tamegrad.train.results.summarize` rows (read when omitted).
    """
    out = Path(out_dir)
    rows = summarize(out) if rows is None else rows
    if not is_sweep(rows):
        return None
    best = best_per_family(rows)
    text = (
        f"# Best learning rate per family: {out.name}\n\n"
        "Each family at the sweep point with the best mean final test metric, per batch size "
        "(selected on the test set itself: optimistic alike for every family; confirm close "
        "calls with more seeds). 'At the edge' means the best lr is the lowest or highest "
        "swept, so the sweep may not bracket the optimum.\n\n"
        f"{format_best_table(best)}\n"
    )
    atomic_write_text(out / "best.md", text)
    return text


def best_run_dirs(
    out_dir: Path | str, rows: Sequence[dict[str, Any]] | None = None
) -> dict[int, list[Path]]:
    """Per batch size, the run folders of every family's best sweep point (finished seeds)."""
    out = Path(out_dir)
    rows = summarize(out) if rows is None else rows
    dirs: dict[int, list[Path]] = {}
    by_label = {r["label"]: r for r in rows}
    for b in best_per_family(rows):
        if b["best_label"] is not None:
            seeds = by_label[b["best_label"]]["completed_seeds"]
            dirs.setdefault(b["batch_size"], []).extend(
                run_dir_for(out, b["best_label"], s) for s in seeds
            )
    return dirs


def plot_best(
    out_dir: Path | str, title: str, rows: Sequence[dict[str, Any]] | None = None
) -> list[Path]:
    """``best_curves_b<batch>.png`` per batch size: each family at its best lr."""
    from .plot import plot_runs

    out = Path(out_dir)
    return [
        plot_runs(dirs, out / f"best_curves_b{batch}.png", title=f"{title}, batch {batch}, "
                  "best lr per family")
        for batch, dirs in best_run_dirs(out, rows).items()
    ]


SweepPoints = dict[int, dict[str, list[tuple[float, float | None]]]]


def sweep_points(rows: Sequence[dict[str, Any]]) -> SweepPoints:
    """Per batch size and family, ``(lr, mean metric)`` for every sweep point, lr ascending.

    The metric is None for a point that diverged or has no finished seed yet; the accuracy is
    kept as a fraction (as in the rows).
    """
    metric, _ = _metric(rows)
    points: SweepPoints = {}
    for (batch, family), group in _by_family(rows).items():
        points.setdefault(batch, {})[family] = sorted(
            ((p.lr, r.get(f"{metric}_mean")) for p, r in group), key=lambda v: v[0]
        )
    return points


def plot_sweep(
    out_dir: Path | str, title: str, rows: Sequence[dict[str, Any]] | None = None
) -> Path:
    """``sweep.png``: final test metric against lr, one panel per family, a line per batch size.

    Panels share the metric axis, so families compare across panels; the lr axis is each
    family's own (log scale). A curve whose best point is its first or last shows a sweep that
    did not bracket the optimum. A point that diverged is drawn as a cross at the bottom
    (accuracy) or top (bpc) of the axis; points with no finished seed are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    out = Path(out_dir)
    rows = summarize(out) if rows is None else rows
    metric, higher = _metric(rows)
    by_label = {r["label"]: r for r in rows}
    diverged = {sweep_point(by_label[d]) for b in best_per_family(rows) for d in b["diverged"]}
    points = sweep_points(rows)
    acc = metric == "final_test_acc"
    scale = 100.0 if acc else 1.0
    families = list(dict.fromkeys(f for fams in points.values() for f in fams))
    batches = list(points)
    finite = [v * scale for fams in points.values() for vals in fams.values()
              for _, v in vals if v is not None]
    edge = (min(finite) if higher else max(finite)) if finite else 0.0
    ncols = min(3, len(families))
    nrows = math.ceil(len(families) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), sharey=True,
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, family in zip(axes.flat, families):
        for bi, batch in enumerate(batches):
            vals = points[batch].get(family, [])
            color = cmap(bi % 10)
            xs = [lr for lr, v in vals if v is not None]
            ys = [v * scale for _, v in vals if v is not None]
            ax.plot(xs, ys, color=color, marker="o", lw=1.6, ms=4, label=f"batch {batch}")
            gone = [lr for lr, _ in vals if SweepPoint(family, lr, batch) in diverged]
            if gone:
                ax.plot(gone, [edge] * len(gone), color=color, marker="x", ms=9, lw=0, mew=2)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short ranges
        ax.set_title(family, fontsize=10)
        ax.set_xlabel("learning rate")
        ax.grid(True, alpha=0.3, which="major")
    for ax in axes.flat[len(families):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("final test accuracy (%)" if acc else "final test bits per character")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False,
                   fontsize=9)
    fig.suptitle(f"{title}: final test metric against lr (x = diverged)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05 if handles else 0, 1, 0.96))
    png = out / "sweep.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
