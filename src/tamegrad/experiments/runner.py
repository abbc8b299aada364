"""Running a suite into a results folder: ``suite.json``, sweep extensions, tables, figures.

``OUT/suite.json`` stamps the suite, its version and the profile (a folder holding another one
is refused, so results are never mixed) and records the sweep points added by
:func:`extend_sweeps`; ``OUT/grid.json`` and the run folders are the grid runner's
(:mod:`tamegrad.train.compare`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tamegrad._atomic import atomic_write_text
from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry, run_dir_for
from tamegrad.train.sweep import best_per_family, format_lr, is_sweep, round_lr, sweep_label

from .suites import get_suite, suite_run
from .sweeps import MAX_EXTENSIONS_PER_SIDE, SWEEP_FACTORS, batch_of, with_extensions

#: Key of ``suite.json`` holding the points added by :func:`extend_sweeps`.
EXTENSIONS_KEY = "extensions"

SUITE_FILE = "suite.json"

#: ``runner(base, entries, seeds, out_dir) -> number of failed cells``: how a grid is run.
GridRunner = Callable[[TrainConfig, list[GridEntry], list[int], Path], int]


def read_suite_meta(out: Path | str) -> dict[str, Any]:
    """The folder's ``suite.json`` ({} when absent); ``ValueError`` when unreadable."""
    path = Path(out) / SUITE_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it or use another --out "
                         "folder") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path} does not hold a suite description; use another --out folder")
    return meta


def prepare_suite(
    name: str,
    profile: str,
    out_dir: Path | str,
    *,
    seeds: list[int] | None = None,
    only: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    validate: Callable[[TrainConfig, list[GridEntry]], None] | None = None,
) -> tuple[TrainConfig, list[GridEntry], list[int]]:
    """Resolve the grid of ``name``/``profile`` and stamp ``out_dir/suite.json``.

    ``seeds`` replaces the profile's seeds, ``only`` keeps the entries whose label starts with
    one of the given strings, ``overrides`` changes base-config fields (e.g. ``data_dir``, or
    ``dataset="cifar10"`` for the official files). Sweep points added to the folder by
    :func:`extend_sweeps` join the grid. Refuses a folder that holds another suite, version or
    profile, so results are never mixed. ``validate(base, entries)`` runs before anything is
    written (e.g. the CLI's checks of names and options).
    """
    spec = suite_run(name, profile)
    base = replace(spec.base, **(overrides or {}))
    out = Path(out_dir)
    old = read_suite_meta(out)
    entries = with_extensions(spec.entries, list(old.get(EXTENSIONS_KEY, [])), base)
    if only:
        entries = [e for e in entries if any(e.label.startswith(o) for o in only)]
        if not entries:
            labels = ", ".join(e.label for e in spec.entries)
            raise ValueError(f"--only {only} matches no entry of {name!r}; entries: {labels}")
    meta = {"suite": name, "version": get_suite(name).version, "profile": profile,
            "notes": spec.notes}
    if old and (old.get("suite"), old.get("version"), old.get("profile")) != (
        name, meta["version"], profile
    ):
        raise ValueError(
            f"{out} holds results of {old.get('suite')} v{old.get('version')} "
            f"profile {old.get('profile')}; use another --out folder"
        )
    if validate is not None:
        validate(base, entries)
    if not old:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / SUITE_FILE, json.dumps(meta, indent=2) + "\n")
    return base, entries, list(seeds if seeds is not None else spec.seeds)


def extend_sweeps(
    name: str, profile: str, out_dir: Path | str,
    rows: Sequence[dict[str, Any]] | None = None,
) -> list[str]:
    """Add one lr point beyond every sweep whose best lr sits at its edge; return the labels.

    Reads the folder's results (``rows``: its :func:`~tamegrad.train.results.summarize` rows,
    read when omitted): for each family and batch size whose sweep is complete and whose best
    lr is the lowest (highest) swept, records in ``suite.json`` a point one sweep step (3x)
    lower (higher), at most :data:`MAX_EXTENSIONS_PER_SIDE` beyond the suite's own range on
    each side. The next run of the suite on this folder includes them. Returns ``[]`` when
    every sweep brackets its best (or may grow no further), and for grids that are not
    learning-rate sweeps.
    """
    from tamegrad.train.results import summarize

    out = Path(out_dir)
    rows = summarize(out) if rows is None else rows
    if not is_sweep(rows):
        return []
    meta = read_suite_meta(out)
    extensions = list(meta.get(EXTENSIONS_KEY, []))
    spec = suite_run(name, profile)
    own: dict[tuple[str, int], list[float]] = {}
    for e in spec.entries:
        if e.family is not None and e.lr is not None:
            own.setdefault((e.family, batch_of(e, spec.base)), []).append(float(e.lr))
    step = SWEEP_FACTORS[-1] / SWEEP_FACTORS[-2]
    added: list[str] = []
    for best in best_per_family(rows):
        key = (best["family"], best["batch_size"])
        if not best["at_edge"] or not best["complete"] or key not in own:
            continue
        lrs, up = best["lrs"], best["best_lr"] == best["lrs"][-1]
        beyond = [lr for lr in lrs if (lr > max(own[key]) if up else lr < min(own[key]))]
        if len(beyond) >= MAX_EXTENSIONS_PER_SIDE:
            continue
        lr = round_lr(best["best_lr"] * step if up else best["best_lr"] / step)
        point = {"family": key[0], "batch_size": key[1], "lr": lr}
        if point in extensions:  # recorded, but left out of the last run (e.g. by --only)
            continue
        extensions.append(point)
        added.append(sweep_label(key[0], format_lr(lr), key[1]))
    if added:
        meta[EXTENSIONS_KEY] = extensions
        atomic_write_text(out / SUITE_FILE, json.dumps(meta, indent=2) + "\n")
    return added


def seed_stage(
    sweep_out: Path | str, seeds_out: Path | str, *, require_complete: bool = True,
    suite: str | None = None, profile: str | None = None,
) -> list[str]:
    """Stage 2 of a learning-rate sweep: each family's best lr on more seeds, in a new folder.

    Copies the seed-0 run of every family's best sweep point (per batch size; the choice of
    the sweep's ``best.md``) from ``sweep_out`` into ``seeds_out`` (checkpoints left out; the
    grid runner skips it, its config being the same) and records the sweep's edge extensions
    in ``seeds_out/suite.json``, so that an lr added by ``--extend-edges`` is an entry there
    too. Returns the labels, for ``reproduce --out SEEDS_OUT --seeds 0 1 2 --only LABELS``
    (``tamegrad reproduce --best-of SWEEP_OUT`` does both). Call it again as more sweeps finish.

    ``ValueError`` when ``sweep_out`` is not a suite's folder (or not of ``suite``/``profile``
    when given), when ``seeds_out`` holds another suite, version or profile, when no sweep is
    complete, and (``require_complete``) while any is incomplete; otherwise the incomplete ones
    are left out.
    """
    import shutil

    from tamegrad.train.results import summarize

    src, dst = Path(sweep_out), Path(seeds_out)
    if src.resolve() == dst.resolve():
        raise ValueError(f"the seed stage needs a folder of its own, not the sweep's ({src})")
    src_meta = read_suite_meta(src)
    name, found = src_meta.get("suite"), src_meta.get("profile")
    if not isinstance(name, str) or not isinstance(found, str):
        raise ValueError(f"{src} holds no suite's results ({SUITE_FILE} missing)")
    if (suite or name, profile or found) != (name, found):
        raise ValueError(f"{src} holds {name} profile {found} results, not "
                         f"{suite or name} {profile or found}")
    profile = found
    version = get_suite(name).version
    if src_meta.get("version") != version:
        raise ValueError(f"{src} holds {name} v{src_meta.get('version')} results; this "
                         f"tamegrad runs v{version}")
    bests = [b for b in best_per_family(summarize(src)) if b["best_label"] is not None]
    incomplete = [f"{b['family']} b{b['batch_size']}" for b in bests if not b["complete"]]
    if require_complete and incomplete:
        raise ValueError(f"{src}: the lr sweeps of {', '.join(incomplete)} are not complete yet")
    bests = [b for b in bests if b["complete"]]
    if not bests:
        raise ValueError(f"{src}: no learning-rate sweep is complete yet")
    meta = read_suite_meta(dst) or {"suite": name, "version": version, "profile": profile,
                                    "notes": suite_run(name, profile).notes}
    if (meta.get("suite"), meta.get("version"), meta.get("profile")) != (name, version, profile):
        raise ValueError(f"{dst} holds results of {meta.get('suite')} v{meta.get('version')} "
                         f"profile {meta.get('profile')}; use another folder")
    points = list(meta.get(EXTENSIONS_KEY, []))
    points += [p for p in src_meta.get(EXTENSIONS_KEY, []) if p not in points]
    if points:
        meta[EXTENSIONS_KEY] = points
    dst.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dst / SUITE_FILE, json.dumps(meta, indent=2) + "\n")
    labels = []
    for b in bests:
        target = run_dir_for(dst, b["best_label"], 0)
        if not target.exists():
            shutil.copytree(run_dir_for(src, b["best_label"], 0), target,
                            ignore=shutil.ignore_patterns("*.pt", "checkpoints", ".claim"))
        labels.append(str(b["best_label"]))
    return labels


def write_suite_outputs(name: str, profile: str, out_dir: Path | str) -> str:
    """Write the folder's ``results.md``/``.json`` and figures; return the results table.

    A suite's ``report`` adds its own tables to ``results.md`` (and figures). Figures:
    ``curves.png`` (every entry), and for learning-rate sweeps ``best.md``,
    ``best_curves_b<batch>.png`` and ``sweep.png`` (:mod:`tamegrad.train.sweep`). No figure
    while no run has finished.
    """
    from tamegrad.train.plot import plot_runs
    from tamegrad.train.results import summarize, write_results
    from tamegrad.train.sweep import plot_best, plot_sweep, write_best

    out = Path(out_dir)
    table = write_results(out)
    report = get_suite(name).report
    if report is not None:  # the suite's own tables, after the generic one
        extra = report(out, profile).strip()
        if extra:
            text = (out / "results.md").read_text().rstrip("\n") + "\n\n" + extra + "\n"
            atomic_write_text(out / "results.md", text)
            table = table.rstrip("\n") + "\n\n" + extra + "\n"
    title = f"{name} ({profile})"
    with contextlib.suppress(FileNotFoundError):  # nothing finished yet
        plot_runs(out, out / "curves.png", title=title)
        rows = summarize(out)
        if write_best(out, rows) is not None:  # a learning-rate sweep: best lr per family
            plot_best(out, title, rows)
            plot_sweep(out, title, rows)
    return table


def in_process_runner(progress: bool | None = None) -> GridRunner:
    """A :data:`GridRunner` that runs the grid in this process (one worker)."""
    from tamegrad.train.compare import run_grid

    def run(base: TrainConfig, entries: list[GridEntry], seeds: list[int], out: Path) -> int:
        records = run_grid(base, entries, seeds, out, progress=progress)
        return sum(r["action"] == "failed" for r in records)

    return run


def run_suite(
    name: str,
    profile: str,
    out_dir: Path | str,
    *,
    seeds: list[int] | None = None,
    only: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    extend_edges: bool = False,
    runner: GridRunner | None = None,
    validate: Callable[[TrainConfig, list[GridEntry]], None] | None = None,
    progress: bool | None = None,
    report: Callable[[str], None] | None = None,
) -> str:
    """Run (or continue) the suite's grid; write and return the results table.

    Finished runs are skipped, so calling it again continues an interrupted grid. ``runner``
    runs one grid (default: :func:`in_process_runner`; the CLI passes one that spawns worker
    processes). ``extend_edges`` then grows every sweep whose best lr is at its edge
    (:func:`extend_sweeps`) and runs the new points, until each sweep brackets its best or may
    grow no further. ``validate`` is passed to :func:`prepare_suite`; ``report`` receives one
    line per step (what runs, what was added).
    """
    run = runner or in_process_runner(progress)
    say = report or (lambda _line: None)
    out = Path(out_dir)
    while True:
        base, entries, grid_seeds = prepare_suite(
            name, profile, out, seeds=seeds, only=only, overrides=overrides, validate=validate
        )
        say(f"reproduce {name} --profile {profile}: {len(entries)} configurations "
            f"x {len(grid_seeds)} seeds -> {out}")
        run(base, entries, grid_seeds, out)
        added = extend_sweeps(name, profile, out) if extend_edges else []
        if not added:
            break
        say(f"best lr at the edge of its sweep; adding {', '.join(added)}")
    return write_suite_outputs(name, profile, out)
