"""What a grid is: entries x seeds over one base config, and its ``grid.json``.

A grid is a list of :class:`GridEntry` (an optimizer with its hyper-parameters and optional
:class:`~tamegrad.train.config.TrainConfig` overrides) crossed with a list of seeds. Cell
``(entry, seed)`` lives in ``OUT/<slug(label)>/seed<k>/`` (a run folder,
:class:`~tamegrad.train.run_folder.RunFolder`). ``OUT/grid.json`` records the base config, the
entries, the seeds and the torch thread count of each worker, so a grid can be continued later
exactly as it was started (results depend on the intra-op thread count).

``grid.json`` versions: 1 (base_config, entries, seeds) is read as is; 2 adds ``threads`` and
the entries' ``family``. Files are written as version 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tamegrad._atomic import atomic_write_text
from tamegrad.train.config import TrainConfig

GRID_FILE = "grid.json"
GRID_VERSION = 2
# Config fields that an entry sets itself and that therefore cannot be overridden.
_RESERVED_FIELDS = frozenset({"optimizer", "optimizer_kwargs", "lr", "seed"})


@dataclass
class GridEntry:
    """One row of a comparison: an optimizer, its hyper-parameters and config overrides.

    ``lr=None`` keeps the base config's learning rate. ``overrides`` maps
    :class:`TrainConfig` field names (``batch_size``, ``grad_accum``, ``weight_decay``, ...) to
    the values this entry uses instead of the base config's. ``family`` marks the entry as one
    point of a learning-rate sweep: entries with the same family and batch size differ only in
    ``lr`` (see :mod:`tamegrad.train.sweep`); None for entries that are not sweep points.
    """

    label: str
    optimizer: str
    lr: float | None = None
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    family: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists; ``family`` only when set)."""
        data = jsonable(dataclasses.asdict(self))
        if self.family is None:
            del data["family"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridEntry:
        """Inverse of :meth:`to_dict` (JSON lists in hyper-parameters become tuples again)."""
        family = data.get("family")
        return cls(
            label=str(data["label"]),
            optimizer=str(data["optimizer"]),
            lr=None if data.get("lr") is None else float(data["lr"]),
            optimizer_kwargs={
                k: _tuplify(v) for k, v in dict(data.get("optimizer_kwargs") or {}).items()
            },
            overrides={k: _tuplify(v) for k, v in dict(data.get("overrides") or {}).items()},
            family=None if family is None else str(family),
        )


@dataclass
class Grid:
    """The contents of ``grid.json``: base config, entries, seeds, threads per worker."""

    base: TrainConfig
    entries: list[GridEntry]
    seeds: list[int]
    threads: int | None = None  # torch intra-op threads of each worker; None = not recorded


# ----------------------------------------------------------------------------- helpers


def slugify(label: str) -> str:
    """A file-system-safe folder name for ``label`` (``"sgd:lr=0.1"`` -> ``"sgd_lr-0.1"``)."""
    slug = label.strip().replace("=", "-")
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", slug).strip("._")
    return slug or "run"


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists, paths as strings and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
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
    return jsonable(config.to_dict())


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


def run_dir_for(out_dir: Path | str, label: str, seed: int) -> Path:
    """``out_dir/<slug(label)>/seed<seed>``."""
    return Path(out_dir) / slugify(label) / f"seed{int(seed)}"


def cells(entries: Sequence[GridEntry], seeds: Sequence[int]) -> list[tuple[GridEntry, int]]:
    """The grid's cells, seed-major: a partly finished grid has every entry at the first seeds."""
    return [(e, int(s)) for s in seeds for e in entries]


def check_labels(entries: Sequence[GridEntry]) -> None:
    """Refuse (``ValueError``) two entries whose labels map to the same folder."""
    seen: dict[str, str] = {}
    for e in entries:
        slug = slugify(e.label)
        if slug in seen:
            raise ValueError(
                f"labels {seen[slug]!r} and {e.label!r} map to the same folder {slug!r}; "
                "give the entries distinct labels"
            )
        seen[slug] = e.label


# ----------------------------------------------------------------------------- grid file


def write_grid(
    out_dir: Path | str,
    base_config: TrainConfig,
    entries: Sequence[GridEntry],
    seeds: Sequence[int],
    *,
    threads: int | None = None,
) -> Path:
    """Write ``out_dir/grid.json`` describing the grid (atomic; untouched when unchanged).

    The file describes everything the folder holds: entries and seeds already recorded there
    are kept (an entry of the same label takes the new definition), so running a folder in
    parts (``--only``, a seed stage added family by family, or two processes with different
    subsets) leaves every part in its tables. ``threads=None`` keeps the thread count already
    recorded in the folder (if any).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / GRID_FILE
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(path.read_text())
        old = loaded if isinstance(loaded, dict) else {}
    if threads is None:
        with contextlib.suppress(ValueError, TypeError):
            recorded = old.get("threads")
            threads = int(recorded) if recorded is not None else None
    new_entries = {e.label: e.to_dict() for e in entries}
    merged: list[dict[str, Any]] = []  # the recorded order, new labels appended
    for e in old.get("entries", []) if isinstance(old.get("entries"), list) else []:
        label = e.get("label") if isinstance(e, dict) else None
        if isinstance(label, str):
            merged.append(new_entries.pop(label, e))
    merged += list(new_entries.values())
    all_seeds = [int(s) for s in seeds]
    for s in old.get("seeds", []) if isinstance(old.get("seeds"), list) else []:
        if isinstance(s, int) and s not in all_seeds:
            all_seeds.append(s)
    payload: dict[str, Any] = {
        "version": GRID_VERSION,
        "base_config": config_to_dict(base_config),
        "entries": merged,
        "seeds": sorted(all_seeds),
        "threads": threads,
    }
    text = json.dumps(payload, indent=2) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return path  # unchanged (e.g. a worker re-reading the grid it continues)
    atomic_write_text(path, text)
    return path


def read_grid(out_dir: Path | str) -> Grid:
    """Read ``out_dir/grid.json`` (version 1 or 2).

    Raises ``FileNotFoundError`` when the folder holds no grid and ``ValueError`` when the file
    cannot be parsed.
    """
    path = Path(out_dir) / GRID_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out_dir} is not a comparison folder")
    try:
        data = json.loads(path.read_text())
        version = int(data.get("version", 1))
        if version > GRID_VERSION:
            raise ValueError(f"version {version} is newer than this tamegrad ({GRID_VERSION})")
        threads = data.get("threads")
        return Grid(
            base=config_from_dict(data["base_config"]),
            entries=[GridEntry.from_dict(e) for e in data["entries"]],
            seeds=[int(s) for s in data["seeds"]],
            threads=None if threads is None else int(threads),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a valid grid file: {exc}") from exc


def load_grid(out_dir: Path | str) -> tuple[TrainConfig, list[GridEntry], list[int]]:
    """``(base_config, entries, seeds)`` of :func:`read_grid`."""
    grid = read_grid(out_dir)
    return grid.base, grid.entries, grid.seeds


def check_existing_runs(
    out_dir: Path | str, grid_cells: Sequence[tuple[GridEntry, int]],
    configs: Sequence[TrainConfig],
) -> None:
    """Refuse (``ValueError``) a grid whose folders hold runs made with a different config.

    Reusing them would silently mix configurations in one table; the differences allowed are
    those ``train(resume=True)`` allows (device, data_dir, eval batch size, ...).
    """
    from tamegrad.train.run_folder import RunFolder

    conflicts: list[str] = []
    for (entry, seed), config in zip(grid_cells, configs):
        folder = RunFolder(run_dir_for(out_dir, entry.label, seed))
        if not folder.config_path.is_file():
            continue
        data = folder.read_config()
        try:
            if data is None:
                raise ValueError("not a JSON object")
            stored = config_from_dict(data)
        except (ValueError, TypeError, AttributeError) as exc:
            conflicts.append(f"{folder.config_path}: unreadable ({exc})")
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
