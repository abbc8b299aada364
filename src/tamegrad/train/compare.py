"""Resumable grid runner: entries x seeds -> run folders (:mod:`tamegrad.train.grid`).

Each cell ``(entry, seed)`` trains into ``OUT/<slug(label)>/seed<k>/`` with ``train_fn``
(default :func:`tamegrad.train.trainer.train`).

* A cell whose ``summary.json`` says ``"completed"`` is skipped, so rerunning a grid is cheap.
* A cell left ``"running"`` or ``"interrupted"`` (Ctrl-C, SIGTERM), or without a summary, is
  resumed from its checkpoint when it exists, otherwise restarted (``train(..., resume=True)`` in
  both cases; the trainer refuses to resume with a config that differs from the checkpointed
  one, which fails that cell). Failed cells are kept as failed unless ``retry_failed=True`` (then
  they resume from their last good checkpoint). An interrupted cell is never counted as failed.
* Several processes can share one grid (``worker``/``num_workers``): every cell is claimed with
  a claim file (:mod:`tamegrad.train.claims`), so no two workers run the same cell. Each worker
  first runs its own share (cell ``i`` with ``i % num_workers == worker``) and then helps with
  whatever is still unclaimed.
* ``OUT/grid.json`` records the grid and the torch thread count of its workers
  (:func:`~tamegrad.train.grid.write_grid`); :mod:`tamegrad.train.results` writes the tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tamegrad.train.claims import release_claim, try_claim
from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import (
    GridEntry,
    cells,
    check_existing_runs,
    check_labels,
    entry_config,
    run_dir_for,
    write_grid,
)
from tamegrad.train.results import was_interrupted
from tamegrad.train.run_folder import RunFolder

log = logging.getLogger(__name__)

#: ``train_fn(config, run_dir, *, resume, progress) -> summary`` (the trainer's signature).
TrainFn = Callable[..., dict[str, Any]]


def _order_for_worker(n: int, worker: int, num_workers: int) -> list[int]:
    own = [i for i in range(n) if i % num_workers == worker]
    rest = [i for i in range(n) if i % num_workers != worker]
    return own + rest


def is_finished(summary: dict[str, Any] | None, config: TrainConfig, retry_failed: bool) -> bool:
    """True when a cell needs no training: completed (all epochs), or failed and not retried.

    An interrupted cell (status "interrupted", or "failed" by ``KeyboardInterrupt``) is never
    finished: it resumes.
    """
    if not summary or was_interrupted(summary):
        return False
    status = summary.get("status")
    if status == "failed":
        return not retry_failed
    if status != "completed":
        return False
    done = summary.get("epochs")
    # A completed run with fewer epochs than asked (constant schedule only; others are refused
    # by check_existing_runs) is extended by resuming it.
    return not isinstance(done, int) or done >= config.epochs


def mark_interrupted(run_dir: Path | str) -> None:
    """Record in ``run_dir``'s summary that the run was interrupted (not failed).

    Trainers that record a ``KeyboardInterrupt`` as status "failed" are corrected here, so the
    run resumes on the next run of the grid; a summary that already says "interrupted", or that
    records another error, is left alone.
    """
    folder = RunFolder(run_dir)
    summary = folder.read_summary()
    if summary is not None and summary.get("status") == "failed" and was_interrupted(summary):
        folder.write_summary({**summary, "status": "interrupted"})


def pending_cells(
    out_dir: Path | str, entries: Sequence[GridEntry], seeds: Sequence[int],
    configs: Sequence[TrainConfig], retry_failed: bool,
) -> int:
    """How many cells of the grid still need training."""
    return sum(
        not is_finished(RunFolder(run_dir_for(out_dir, e.label, s)).read_summary(), c,
                        retry_failed)
        for (e, s), c in zip(cells(entries, seeds), configs)
    )


def run_grid(
    base_config: TrainConfig,
    entries: Sequence[GridEntry],
    seeds: Sequence[int],
    out_dir: Path | str,
    *,
    worker: int = 0,
    num_workers: int = 1,
    progress: bool | None = None,
    retry_failed: bool = False,
    threads: int | None = None,
    train_fn: TrainFn | None = None,
) -> list[dict[str, Any]]:
    """Run every ``(entry, seed)`` cell not yet completed; return one record per cell.

    Each record is ``{"label", "seed", "run_dir", "action", "summary"}`` where ``action`` is
    ``"ran"`` (trained now, from scratch), ``"resumed"``, ``"skipped"`` (already completed, or
    failed earlier and ``retry_failed`` is false), ``"busy"`` (claimed by another live worker) or
    ``"failed"`` (``train_fn`` raised now; the error is in ``record["error"]``). A failing cell
    does not stop the grid; ``KeyboardInterrupt`` does: the cell is marked interrupted and its
    claim released, so the next run of the grid resumes it.

    ``threads`` is recorded in ``grid.json`` as the torch thread count of each worker (the caller
    sets it: this function does not change torch's settings). ``train_fn`` replaces
    :func:`tamegrad.train.trainer.train` (tests, other trainers).
    """
    if train_fn is None:
        from tamegrad.train.trainer import train

        train_fn = train

    if num_workers < 1 or not 0 <= worker < num_workers:
        raise ValueError(f"need 0 <= worker < num_workers, got worker={worker}, {num_workers=}")
    entries = list(entries)
    seeds = [int(s) for s in seeds]
    if not entries or not seeds:
        raise ValueError("a grid needs at least one entry and one seed")
    check_labels(entries)
    out = Path(out_dir)
    grid_cells = cells(entries, seeds)
    configs = [entry_config(base_config, e, s) for e, s in grid_cells]  # validate first
    check_existing_runs(out, grid_cells, configs)
    write_grid(out, base_config, entries, seeds, threads=threads)

    records: list[dict[str, Any]] = []
    for i in _order_for_worker(len(grid_cells), worker, num_workers):
        entry, seed = grid_cells[i]
        config = configs[i]
        folder = RunFolder(run_dir_for(out, entry.label, seed))
        record: dict[str, Any] = {"label": entry.label, "seed": seed,
                                  "run_dir": str(folder.path)}
        summary = folder.read_summary()
        if is_finished(summary, config, retry_failed):
            records.append({**record, "action": "skipped", "summary": summary})
            continue
        if not try_claim(folder.path, out):
            records.append({**record, "action": "busy", "summary": summary})
            continue
        try:
            # Re-read after claiming: another worker may have finished it in between.
            summary = folder.read_summary()
            if is_finished(summary, config, retry_failed):
                records.append({**record, "action": "skipped", "summary": summary})
                continue
            # resume=True also starts from scratch when there is no checkpoint yet (and keeps
            # train() from refusing a folder that a killed run left half-written).
            resume = folder.has_checkpoint()
            log.info("%s %s seed %d -> %s", "resuming" if resume else "running",
                     entry.label, seed, folder.path)
            try:
                result = train_fn(config, folder.path, resume=True, progress=progress)
            except KeyboardInterrupt:
                mark_interrupted(folder.path)
                log.warning("interrupted %s seed %d: it resumes on the next run of the grid",
                            entry.label, seed)
                raise
            except Exception as exc:  # one failing cell must not stop the grid
                log.error("%s seed %d failed: %s", entry.label, seed, exc)
                records.append({**record, "action": "failed", "error": str(exc),
                                "summary": folder.read_summary()})
                continue
            summary = folder.read_summary() or (result if isinstance(result, dict) else None)
            acc = (summary or {}).get("final_test_acc")
            log.info("finished %s seed %d: final test acc %s, %.1f s", entry.label, seed,
                     f"{acc:.4f}" if isinstance(acc, (int, float)) else "n/a",
                     float((summary or {}).get("wall_time") or 0.0))
            records.append({**record, "action": "resumed" if resume else "ran",
                            "summary": summary})
        finally:
            release_claim(folder.path)
    order = {e.label: j for j, e in enumerate(entries)}
    records.sort(key=lambda r: (order[r["label"]], r["seed"]))
    return records
