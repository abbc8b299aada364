"""Resumable grid runner: entries x seeds -> run folders, then a results table.

A grid is a list of :class:`GridEntry` (an optimizer with its hyper-parameters and optional
:class:`~tamegrad.train.config.TrainConfig` overrides) crossed with a list of seeds. Each cell
``(entry, seed)`` trains into ``OUT/<slug(label)>/seed<k>/`` with
:func:`tamegrad.train.trainer.train`.

* A cell whose ``summary.json`` says ``"completed"`` is skipped, so rerunning a grid is cheap.
* A cell left ``"running"`` (or without a summary) is resumed from ``checkpoints/last.pt`` when it
  exists, otherwise restarted (``train(..., resume=True)`` in both cases; the trainer refuses to
  resume with a config that differs from the checkpointed one, which fails that cell). Failed
  cells are kept as failed unless ``retry_failed=True`` (then they resume from their last good
  checkpoint).
* Several processes can share one grid (``worker``/``num_workers``): every cell is claimed with an
  atomic ``O_CREAT | O_EXCL`` claim file holding the claimant's host and PID, so no two workers run
  the same cell; a claim left by a dead process is broken (under a short ``flock``) and re-taken.
  Each worker first runs its own share (cell ``i`` with ``i % num_workers == worker``) and then
  helps with whatever is still unclaimed.
* ``OUT/grid.json`` records the base config, entries and seeds, so ``tamegrad compare --resume OUT``
  can continue an interrupted grid; :func:`write_results` writes ``results.md`` / ``results.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import socket
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tamegrad._atomic import atomic_write_text
from tamegrad.train.config import TrainConfig

log = logging.getLogger(__name__)

GRID_FILE = "grid.json"
CLAIM_FILE = ".claim"
_GRID_LOCK = ".grid.lock"
# Config fields that an entry sets itself and that therefore cannot be overridden.
_RESERVED_FIELDS = frozenset({"optimizer", "optimizer_kwargs", "lr", "seed"})


@dataclass
class GridEntry:
    """One row of a comparison: an optimizer, its hyper-parameters and config overrides.

    ``lr=None`` keeps the base config's learning rate. ``overrides`` maps
    :class:`TrainConfig` field names (``batch_size``, ``grad_accum``, ``weight_decay``, ...) to
    the values this entry uses instead of the base config's.
    """

    label: str
    optimizer: str
    lr: float | None = None
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridEntry:
        """Inverse of :meth:`to_dict` (JSON lists in hyper-parameters become tuples again)."""
        return cls(
            label=str(data["label"]),
            optimizer=str(data["optimizer"]),
            lr=None if data.get("lr") is None else float(data["lr"]),
            optimizer_kwargs={
                k: _tuplify(v) for k, v in dict(data.get("optimizer_kwargs") or {}).items()
            },
            overrides={k: _tuplify(v) for k, v in dict(data.get("overrides") or {}).items()},
        )


# ----------------------------------------------------------------------------- helpers


def slugify(label: str) -> str:
    """A file-system-safe folder name for ``label`` (``"sgd:lr=0.1"`` -> ``"sgd_lr-0.1"``)."""
    slug = label.strip().replace("=", "-")
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", slug).strip("._")
    return slug or "run"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """``TrainConfig`` as a JSON-ready dict."""
    return _jsonable(config.to_dict())


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild (and validate) a ``TrainConfig`` from :func:`config_to_dict` output.

    JSON lists inside ``optimizer_kwargs`` (e.g. ``betas``) become tuples again. Raises
    ``ValueError`` on unknown fields or invalid values.
    """
    kwargs = dict(data)
    if isinstance(kwargs.get("optimizer_kwargs"), dict):
        kwargs["optimizer_kwargs"] = {k: _tuplify(v) for k, v in kwargs["optimizer_kwargs"].items()}
    return TrainConfig.from_dict(kwargs)


def config_fields() -> list[str]:
    """Names of the ``TrainConfig`` fields an entry may override."""
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name not in _RESERVED_FIELDS]


def entry_config(base: TrainConfig, entry: GridEntry, seed: int) -> TrainConfig:
    """The config of cell ``(entry, seed)``: ``base`` with the entry's optimizer and overrides."""
    allowed = set(config_fields())
    bad = sorted(set(entry.overrides) - allowed)
    if bad:
        raise ValueError(
            f"entry {entry.label!r}: unknown config override(s) {', '.join(bad)}; "
            f"valid: {', '.join(sorted(allowed))}"
        )
    changes: dict[str, Any] = {
        "optimizer": entry.optimizer,
        "optimizer_kwargs": dict(entry.optimizer_kwargs),
        "seed": int(seed),
        **entry.overrides,
    }
    if entry.lr is not None:
        changes["lr"] = float(entry.lr)
    return dataclasses.replace(base, **changes).validate()


def run_dir_for(out_dir: Path, label: str, seed: int) -> Path:
    """``out_dir/<slug(label)>/seed<seed>``."""
    return Path(out_dir) / slugify(label) / f"seed{int(seed)}"


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``summary.json`` or None when absent or unreadable."""
    path = Path(run_dir) / "summary.json"
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` (a torn last line is ignored)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    try:
        with open(path) as fh:
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


# ----------------------------------------------------------------------------- grid file


def write_grid(
    out_dir: Path, base_config: TrainConfig, entries: Sequence[GridEntry], seeds: Sequence[int]
) -> Path:
    """Write ``out_dir/grid.json`` describing the grid (atomic)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": 1,
        "base_config": config_to_dict(base_config),
        "entries": [e.to_dict() for e in entries],
        "seeds": [int(s) for s in seeds],
    }
    path = out_dir / GRID_FILE
    text = json.dumps(payload, indent=2) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return path  # unchanged (e.g. a worker re-reading the grid it continues)
    atomic_write_text(path, text)
    return path


def load_grid(out_dir: Path) -> tuple[TrainConfig, list[GridEntry], list[int]]:
    """Read ``out_dir/grid.json`` back: ``(base_config, entries, seeds)``.

    Raises ``FileNotFoundError`` when the folder holds no grid and ``ValueError`` when the file
    cannot be parsed.
    """
    path = Path(out_dir) / GRID_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out_dir} is not a comparison folder")
    try:
        data = json.loads(path.read_text())
        base = config_from_dict(data["base_config"])
        entries = [GridEntry.from_dict(e) for e in data["entries"]]
        seeds = [int(s) for s in data["seeds"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a valid grid file: {exc}") from exc
    return base, entries, seeds


def _check_labels(entries: Sequence[GridEntry]) -> None:
    seen: dict[str, str] = {}
    for e in entries:
        slug = slugify(e.label)
        if slug in seen:
            raise ValueError(
                f"labels {seen[slug]!r} and {e.label!r} map to the same folder {slug!r}; "
                "give the entries distinct labels"
            )
        seen[slug] = e.label


# ----------------------------------------------------------------------------- claims

_HOST = socket.gethostname()
# Claim files this process holds right now (a claim with our PID that is not in here is a
# leftover of an aborted attempt; one that is belongs to another thread of this process).
_HELD: set[str] = set()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _claim_is_stale(path: Path) -> bool:
    """True when the claim at ``path`` belongs to a process on this host that is gone."""
    try:
        data = json.loads(path.read_text())
        pid = int(data["pid"])
        host = str(data.get("host", _HOST))
    except FileNotFoundError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        # Half-written claim: the writer may still be writing; treat it as stale only when old.
        try:
            return time.time() - path.stat().st_mtime > 30.0
        except OSError:
            return True
    if host != _HOST:
        return False  # cannot check a process on another machine; assume it is alive
    if pid == os.getpid():
        return str(path.resolve()) not in _HELD
    return not _pid_alive(pid)


@contextlib.contextmanager
def _grid_lock(out_dir: Path) -> Iterator[None]:
    """A short exclusive ``flock`` over the grid (auto-released if the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    fd = os.open(Path(out_dir) / _GRID_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def try_claim(run_dir: Path, out_dir: Path) -> bool:
    """Atomically claim ``run_dir`` for this process; False when a live process holds it.

    The claim file is created with ``O_CREAT | O_EXCL`` and records host, PID and time. A claim
    whose process is dead is removed and re-taken; that check-and-break happens under an
    ``flock`` on the grid, so two workers cannot both break the same stale claim.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    payload = json.dumps({"pid": os.getpid(), "host": _HOST, "time": time.time()}).encode()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with _grid_lock(out_dir):
                if not _claim_is_stale(path):
                    return False
                log.info("breaking stale claim %s", path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:  # a live worker claimed it in between
                    return False
                _write_claim(fd, payload, path)
                return True
        _write_claim(fd, payload, path)
        return True
    return False  # pragma: no cover


def _write_claim(fd: int, payload: bytes, path: Path) -> None:
    _HELD.add(str(path.resolve()))
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


def release_claim(run_dir: Path) -> None:
    """Remove this process's claim on ``run_dir`` (no-op when the claim is someone else's)."""
    path = Path(run_dir) / CLAIM_FILE
    key = str(path.resolve())
    if key not in _HELD:
        return
    _HELD.discard(key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if data.get("pid") == os.getpid() and data.get("host") == _HOST:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ----------------------------------------------------------------------------- running


def _cells(entries: Sequence[GridEntry], seeds: Sequence[int]) -> list[tuple[GridEntry, int]]:
    # seed-major: a partly finished grid has every configuration at the first seeds
    return [(e, int(s)) for s in seeds for e in entries]


def _order_for_worker(n: int, worker: int, num_workers: int) -> list[int]:
    own = [i for i in range(n) if i % num_workers == worker]
    rest = [i for i in range(n) if i % num_workers != worker]
    return own + rest


def _checkpoint_exists(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.pt").is_file()


def is_finished(summary: dict[str, Any] | None, config: TrainConfig, retry_failed: bool) -> bool:
    """True when a cell needs no training: completed (all epochs), or failed and not retried."""
    if not summary:
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


def check_existing_runs(
    out_dir: Path, cells: Sequence[tuple[GridEntry, int]], configs: Sequence[TrainConfig]
) -> None:
    """Refuse (``ValueError``) a grid whose folders hold runs made with a different config.

    Reusing them would silently mix configurations in one table; the differences allowed are
    those ``train(resume=True)`` allows (device, data_dir, eval batch size, ...).
    """
    conflicts: list[str] = []
    for (entry, seed), config in zip(cells, configs):
        path = run_dir_for(out_dir, entry.label, seed) / "config.json"
        if not path.is_file():
            continue
        try:
            stored = config_from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, AttributeError) as exc:
            conflicts.append(f"{path}: unreadable ({exc})")
            continue
        diffs = config.resume_differences(stored)
        if diffs:
            conflicts.append(f"{entry.label} seed {seed}: {'; '.join(diffs)}")
    if conflicts:
        more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        raise ValueError(
            f"{out_dir} already holds runs made with a different configuration: "
            + " | ".join(conflicts[:3]) + more
            + ". Use another output folder, or delete those runs to redo them"
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
) -> list[dict[str, Any]]:
    """Run every ``(entry, seed)`` cell not yet completed; return one record per cell.

    Each record is ``{"label", "seed", "run_dir", "action", "summary"}`` where ``action`` is
    ``"ran"`` (trained now, from scratch), ``"resumed"``, ``"skipped"`` (already completed, or
    failed earlier and ``retry_failed`` is false), ``"busy"`` (claimed by another live worker) or
    ``"failed"`` (train() raised now; the error is in ``record["error"]``). A failing cell does
    not stop the grid; ``KeyboardInterrupt`` does (the cell's claim is released, so the grid can
    be resumed).
    """
    from tamegrad.train.trainer import train

    if num_workers < 1 or not 0 <= worker < num_workers:
        raise ValueError(f"need 0 <= worker < num_workers, got worker={worker}, {num_workers=}")
    entries = list(entries)
    seeds = [int(s) for s in seeds]
    if not entries or not seeds:
        raise ValueError("a grid needs at least one entry and one seed")
    _check_labels(entries)
    out = Path(out_dir)
    cells = _cells(entries, seeds)
    configs = [entry_config(base_config, e, s) for e, s in cells]  # validate before training
    check_existing_runs(out, cells, configs)
    out.mkdir(parents=True, exist_ok=True)
    write_grid(out, base_config, entries, seeds)

    records: list[dict[str, Any]] = []
    for i in _order_for_worker(len(cells), worker, num_workers):
        entry, seed = cells[i]
        config = configs[i]
        run_dir = run_dir_for(out, entry.label, seed)
        record: dict[str, Any] = {"label": entry.label, "seed": seed, "run_dir": str(run_dir)}
        summary = read_summary(run_dir)
        if is_finished(summary, config, retry_failed):
            records.append({**record, "action": "skipped", "summary": summary})
            continue
        if not try_claim(run_dir, out):
            records.append({**record, "action": "busy", "summary": summary})
            continue
        try:
            # Re-read after claiming: another worker may have finished it in between.
            summary = read_summary(run_dir)
            if is_finished(summary, config, retry_failed):
                records.append({**record, "action": "skipped", "summary": summary})
                continue
            # resume=True also starts from scratch when there is no checkpoint yet (and keeps
            # train() from refusing a folder that a killed run left half-written).
            resume = _checkpoint_exists(run_dir)
            log.info("%s %s seed %d -> %s", "resuming" if resume else "running",
                     entry.label, seed, run_dir)
            try:
                result = train(config, run_dir, resume=True, progress=progress)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one failing cell must not stop the grid
                log.error("%s seed %d failed: %s", entry.label, seed, exc)
                records.append({**record, "action": "failed", "error": str(exc),
                                "summary": read_summary(run_dir)})
                continue
            summary = read_summary(run_dir) or (result if isinstance(result, dict) else None)
            acc = (summary or {}).get("final_test_acc")
            log.info("finished %s seed %d: final test acc %s, %.1f s", entry.label, seed,
                     f"{acc:.4f}" if isinstance(acc, (int, float)) else "n/a",
                     float((summary or {}).get("wall_time") or 0.0))
            records.append({**record, "action": "resumed" if resume else "ran",
                            "summary": summary})
        finally:
            release_claim(run_dir)
    records.sort(key=lambda r: (next(j for j, e in enumerate(entries) if e.label == r["label"]),
                                r["seed"]))
    return records


# ----------------------------------------------------------------------------- results


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else None
    return mean, std


def _run_state(run_dir: Path) -> tuple[str, dict[str, Any] | None]:
    """``(status, summary)``; status is completed/failed/running/missing."""
    summary = read_summary(run_dir)
    if summary is None:
        if (run_dir / "metrics.jsonl").exists() or (run_dir / "config.json").exists():
            return "running", None
        return "missing", None
    status = str(summary.get("status", "running"))
    return status, summary


def summarize(out_dir: Path | str) -> list[dict[str, Any]]:
    """One row per label of the grid in ``out_dir`` (mean/std over completed seeds).

    Row keys: ``label, slug, optimizer, lr, n, seeds, completed_seeds, missing`` (a list of
    ``{"seed", "status", "detail"}`` for runs that did not complete), and for each metric
    ``final_test_acc, best_test_acc, final_train_loss, final_test_loss, final_test_bpc`` (text
    runs only) and ``wall_time`` the keys
    ``<metric>_mean``, ``<metric>_std`` (sample std, None when n < 2) and ``<metric>_values``.
    """
    out = Path(out_dir)
    base, entries, seeds = load_grid(out)
    rows: list[dict[str, Any]] = []
    for entry in entries:
        config = entry_config(base, entry, seeds[0])
        per_metric: dict[str, list[float]] = {m: [] for m in _METRICS}
        completed: list[int] = []
        missing: list[dict[str, Any]] = []
        for seed in seeds:
            run_dir = run_dir_for(out, entry.label, seed)
            status, summary = _run_state(run_dir)
            if status != "completed" or summary is None:
                missing.append({"seed": seed, "status": status,
                                "detail": _missing_detail(run_dir, status, summary)})
                continue
            completed.append(seed)
            metrics = read_metrics(run_dir)
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
            "lr": getattr(config, "lr", entry.lr),
            "optimizer_kwargs": _jsonable(entry.optimizer_kwargs),
            "overrides": _jsonable(entry.overrides),
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


def _missing_detail(run_dir: Path, status: str, summary: dict[str, Any] | None) -> str:
    if status == "failed" and summary is not None:
        return f"failed: {summary.get('error', 'unknown error')}"
    if status == "missing":
        if run_dir.is_dir():
            return "no files written (failed at start? see the log)"
        return "not started"
    metrics = read_metrics(run_dir)
    if metrics:
        return f"unfinished (last epoch {metrics[-1].get('epoch')})"
    return "unfinished (no epoch done)"


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
    base, _, seeds = load_grid(out)
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
    payload = {"base_config": cfg, "seeds": seeds, "rows": _jsonable(rows)}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")
    return text
