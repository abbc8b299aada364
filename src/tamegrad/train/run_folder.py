"""The run folder: one owner of its paths, readers and writers.

Layout (written by rank 0 of :func:`tamegrad.train.train`, read by the grid runner, the plots and
the CLI)::

    run_dir/config.json                       the TrainConfig (``TrainConfig.to_dict``)
    run_dir/metrics.jsonl                     one JSON object per finished epoch
    run_dir/summary.json                      status "running" | "completed" | "failed" (+ "error")
    run_dir/checkpoints/last.pt               everything shared by the ranks (atomic)
    run_dir/checkpoints/rank<r>-step<s>.pt    distributed runs only: rank r's own state (RNG,
                                              per-rank optimizer / sampler state) at step s

Every whole-file write is atomic (temp file + ``os.replace``); ``metrics.jsonl`` is appended
line by line (fsynced) and rewritten atomically from the checkpoint on resume, so a torn last
line is dropped. Readers never raise on a missing or unreadable file: they return None / [].
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from tamegrad._atomic import atomic_write_text

__all__ = ["RunFolder", "read_metrics", "read_summary"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


class RunFolder:
    """Paths and file access of one run folder (nothing is created until a write)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- paths ---------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint_dir / CHECKPOINT_FILE

    def shard_path(self, rank: int, step: int) -> Path:
        """Rank ``rank``'s own checkpoint file for the checkpoint taken at optimizer step
        ``step`` (the shared file names the step it belongs to)."""
        return self.checkpoint_dir / f"rank{int(rank)}-step{int(step)}.pt"

    def shard_paths(self, rank: int | None = None) -> list[Path]:
        """Existing rank shards (of ``rank`` only, when given)."""
        if not self.checkpoint_dir.is_dir():
            return []
        pattern = f"rank{int(rank)}-step*.pt" if rank is not None else "rank*-step*.pt"
        return sorted(self.checkpoint_dir.glob(pattern))

    # -- state ---------------------------------------------------------------------------------

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def existing_run_files(self) -> list[str]:
        """Names of the run files (other than config.json) already present."""
        paths = (self.metrics_path, self.summary_path, self.checkpoint_path)
        return [p.name for p in paths if p.exists()]

    def status(self) -> str:
        """``completed`` / ``failed`` / ``running`` (also: started, no summary) / ``missing``."""
        summary = self.read_summary()
        if summary is None:
            if self.metrics_path.exists() or self.config_path.exists():
                return "running"
            return "missing"
        return str(summary.get("status", "running"))

    # -- readers -------------------------------------------------------------------------------

    def read_config(self) -> dict[str, Any] | None:
        """The parsed ``config.json`` (a dict of TrainConfig fields) or None."""
        return _read_json(self.config_path)

    def read_summary(self) -> dict[str, Any] | None:
        return _read_json(self.summary_path)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows of ``metrics.jsonl`` (a torn or unparsable line is skipped)."""
        rows: list[dict[str, Any]] = []
        try:
            with open(self.metrics_path, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        rows.append(obj)
        except OSError:
            return []
        return rows

    # -- writers -------------------------------------------------------------------------------

    def write_config(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.config_path, config)

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.summary_path, summary)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` with ``rows`` (atomic)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.jsonl`` and fsync it."""
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove_stale_temp_files(self) -> None:
        """Delete temporary files a killed atomic write left in the folder (``summary.json``,
        ``metrics.jsonl``, ...) and in ``checkpoints/``.

        Only call this when no other process writes into the folder.
        """
        for folder in (self.path, self.checkpoint_dir):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    with contextlib.suppress(OSError):
                        tmp.unlink()


def read_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``RunFolder(run_dir).read_summary()``: the summary dict, or None when absent/unreadable."""
    return RunFolder(run_dir).read_summary()


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``RunFolder(run_dir).read_metrics()``: the per-epoch rows (torn lines skipped)."""
    return RunFolder(run_dir).read_metrics()
