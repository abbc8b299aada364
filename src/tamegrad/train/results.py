"""Results of a grid: one row per entry (mean and sample std over finished seeds), as a
markdown table (``results.md``) and JSON (``results.json``).

A cell that did not complete is listed under "Missing runs" with its state: failed (with the
error), interrupted or unfinished (both resume on the next run of the grid), or not started.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tamegrad._atomic import atomic_write_text
from tamegrad.train.grid import (
    config_to_dict,
    entry_config,
    jsonable,
    read_grid,
    run_dir_for,
    slugify,
)
from tamegrad.train.run_folder import RunFolder


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else None
    return mean, std


def summarize(out_dir: Path | str) -> list[dict[str, Any]]:
    """One row per label of the grid in ``out_dir`` (mean/std over completed seeds).

    Row keys: ``label, slug, optimizer, lr, family`` (the entry's sweep family or None),
    ``batch_size, optimizer_kwargs, overrides, n, seeds, completed_seeds, missing`` (a list of
    ``{"seed", "status", "detail"}`` for runs that did not complete), and for each metric
    ``final_test_acc, best_test_acc, final_train_loss, final_test_loss, final_test_bpc`` (text
    runs only) and ``wall_time`` the keys
    ``<metric>_mean``, ``<metric>_std`` (sample std, None when n < 2) and ``<metric>_values``.
    """
    out = Path(out_dir)
    grid = read_grid(out)
    base, entries, seeds = grid.base, grid.entries, grid.seeds
    rows: list[dict[str, Any]] = []
    for entry in entries:
        config = entry_config(base, entry, seeds[0])
        per_metric: dict[str, list[float]] = {m: [] for m in _METRICS}
        completed: list[int] = []
        missing: list[dict[str, Any]] = []
        for seed in seeds:
            folder = RunFolder(run_dir_for(out, entry.label, seed))
            status, summary = run_state(folder)
            if status != "completed" or summary is None:
                missing.append({"seed": seed, "status": status,
                                "detail": _missing_detail(folder, status, summary)})
                continue
            completed.append(seed)
            metrics = folder.read_metrics()
            last = metrics[-1] if metrics else {}
            values = {
                "final_test_acc": summary.get("final_test_acc", last.get("test_acc")),
                "best_test_acc": summary.get("best_test_acc"),
                "final_train_loss": summary.get("final_train_loss", last.get("train_loss")),
                "final_test_loss": summary.get("final_test_loss", last.get("test_loss")),
                "final_test_bpc": summary.get("final_test_bpc", last.get("test_bpc")),
                "wall_time": summary.get("wall_time"),
            }
            if values["best_test_acc"] is None:
                accs = [float(m["test_acc"]) for m in metrics
                        if isinstance(m.get("test_acc"), (int, float))]
                values["best_test_acc"] = max(accs) if accs else None
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    per_metric[k].append(float(v))
        row: dict[str, Any] = {
            "label": entry.label,
            "slug": slugify(entry.label),
            "optimizer": entry.optimizer,
            "lr": config.lr,
            "family": entry.family,
            "batch_size": config.batch_size,
            "optimizer_kwargs": jsonable(entry.optimizer_kwargs),
            "overrides": jsonable(entry.overrides),
            "n": len(completed),
            "seeds": list(seeds),
            "completed_seeds": completed,
            "missing": missing,
        }
        for m, vals in per_metric.items():
            mean, std = _mean_std(vals)
            row[f"{m}_mean"] = mean
            row[f"{m}_std"] = std
            row[f"{m}_values"] = vals
        rows.append(row)
    return rows


_METRICS = ("final_test_acc", "best_test_acc", "final_train_loss", "final_test_loss",
            "final_test_bpc", "wall_time")


def was_interrupted(summary: dict[str, Any] | None) -> bool:
    """True for a run stopped by Ctrl-C / SIGTERM: status "interrupted", or "failed" with a
    ``KeyboardInterrupt`` error (how trainers before the "interrupted" status recorded it)."""
    if not summary:
        return False
    status = summary.get("status")
    error = str(summary.get("error") or "")
    return status == "interrupted" or (status == "failed" and error.startswith("KeyboardInterrupt"))


def run_state(folder: RunFolder) -> tuple[str, dict[str, Any] | None]:
    """``(status, summary)`` of a cell; status is completed / failed / interrupted / running /
    missing (an interrupted run counts as interrupted, never as failed)."""
    summary = folder.read_summary()
    if was_interrupted(summary):
        return "interrupted", summary
    return folder.status(), summary


def _missing_detail(folder: RunFolder, status: str, summary: dict[str, Any] | None) -> str:
    if status == "failed" and summary is not None:
        return f"failed: {summary.get('error', 'unknown error')}"
    if status == "missing":
        if folder.path.is_dir():
            return "no files written (failed at start? see the log)"
        return "not started"
    metrics = folder.read_metrics()
    done = f"last epoch {metrics[-1].get('epoch')}" if metrics else "no epoch done"
    if status == "interrupted":
        return f"interrupted ({done}; resumes on the next run of the grid)"
    return f"unfinished ({done})"


def _is_fraction(rows: Sequence[dict[str, Any]]) -> bool:
    vals = [v for r in rows for k in ("final_test_acc", "best_test_acc")
            for v in r.get(f"{k}_values", [])]
    return bool(vals) and max(vals) <= 1.0


def _fmt(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 2) -> str:
    if mean is None:
        return "–"
    text = f"{mean * scale:.{digits}f}"
    if std is not None:
        text += f" ± {std * scale:.{digits}f}"
    return text


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table of :func:`summarize` rows (accuracies in %, mean ± sample std).

    ``n`` is completed/expected seeds; a "final test bpc" column is added for text runs.
    """
    scale = 100.0 if _is_fraction(rows) else 1.0
    bpc = any(r.get("final_test_bpc_values") for r in rows)
    header = (
        "| optimizer | n | final test acc (%) | best test acc (%) | final train loss "
        + ("| final test bpc " if bpc else "")
        + "| wall time / run (s) |"
    )
    lines = [header, "|---" * (7 if bpc else 6) + "|"]
    for r in rows:
        n_text = f"{r['n']}/{len(r['seeds'])}"
        bpc_text = (
            f"| {_fmt(r['final_test_bpc_mean'], r['final_test_bpc_std'], 1.0, 3)} " if bpc else ""
        )
        lines.append(
            f"| {r['label']} | {n_text} "
            f"| {_fmt(r['final_test_acc_mean'], r['final_test_acc_std'], scale)} "
            f"| {_fmt(r['best_test_acc_mean'], r['best_test_acc_std'], scale)} "
            f"| {_fmt(r['final_train_loss_mean'], r['final_train_loss_std'], 1.0, 4)} "
            f"{bpc_text}"
            f"| {_fmt(r['wall_time_mean'], r['wall_time_std'], 1.0, 1)} |"
        )
    missing = [(r["label"], m) for r in rows for m in r["missing"]]
    if missing:
        lines.append("")
        lines.append(f"Missing runs ({len(missing)}, not included above):")
        for label, m in missing:
            lines.append(f"- {label}, seed {m['seed']}: {m['detail']}")
    return "\n".join(lines)


def write_results(out_dir: Path | str) -> str:
    """Write ``results.md`` and ``results.json`` in ``out_dir``; return the markdown text."""
    out = Path(out_dir)
    grid = read_grid(out)
    base, seeds = grid.base, grid.seeds
    rows = summarize(out)
    table = format_table(rows)
    cfg = config_to_dict(base)
    desc_keys = ("dataset", "model", "width", "batch_size", "epochs", "schedule",
                 "weight_decay", "grad_accum", "train_subset")
    desc = ", ".join(f"{k}={cfg[k]}" for k in desc_keys if k in cfg and cfg[k] is not None)
    text = (
        f"# Results: {out.name}\n\n"
        f"Base config: {desc}. Seeds: {', '.join(map(str, seeds))}. "
        "Mean ± sample std over completed seeds (n = completed/expected).\n\n"
        f"{table}\n"
    )
    atomic_write_text(out / "results.md", text)
    payload = {"base_config": cfg, "seeds": seeds, "rows": jsonable(rows)}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")
    return text
