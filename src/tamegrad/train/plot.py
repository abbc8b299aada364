"""Training-curve figures in the style of the paper: a 2x2 grid of panels.

Panels are train loss, test loss, train accuracy and test accuracy against epoch; each label
(optimizer) gets one curve, the mean over its seeds, with a shaded min-max band. Text runs
(character-level language models) are drawn in bits per character when the metrics carry
``*_bpc`` values or the dataset is a text corpus; panels without data say so instead of failing.

``plot_runs`` accepts any mix of grid folders (with ``grid.json`` or ``<label>/seed<k>/``
sub-folders), label folders (``<label>/seed<k>/``) and single run folders (``metrics.jsonl``).
Runs are averaged only when their configs differ in nothing but the seed (and the fields that do
not change a run: device, data folder, evaluation batch size, checkpoint interval): runs of one
label whose configs differ otherwise are kept apart, each curve labelled with what sets it apart
(e.g. ``SGD [dataset=digits, model=mlp]``), never pooled into one mean.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tamegrad.train.config import RESUME_FREE_FIELDS
from tamegrad.train.grid import GRID_FILE, slugify
from tamegrad.train.run_folder import RunFolder

TEXT_DATASETS = frozenset({"tinyshakespeare"})
_SEED_DIR = re.compile(r"^seed\d+$")


@dataclass
class _Group:
    label: str
    runs: list[list[dict[str, Any]]] = field(default_factory=list)
    text: bool = False


def _is_run_dir(path: Path) -> bool:
    folder = RunFolder(path)
    return folder.metrics_path.is_file() or folder.config_path.is_file()


#: Config fields that may differ between runs averaged into one curve.
_POOLABLE_FIELDS = frozenset({"seed", *RESUME_FREE_FIELDS})


def _experiment_key(config: dict[str, Any] | None) -> str:
    """What must be equal for two runs to be seeds of one experiment (JSON, sorted keys)."""
    kept = {k: v for k, v in (config or {}).items() if k not in _POOLABLE_FIELDS}
    return json.dumps(kept, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:21] + "..."


def split_experiments(
    found: dict[str, list[Path]],
) -> dict[str, list[Path]]:
    """Split each label's runs by experiment (config up to the seed); return label -> runs.

    A label whose runs all share one experiment is kept as is; otherwise each experiment becomes
    its own label, ``"<label> [field=value, ...]"`` with the (up to 3) fields that tell the
    label's experiments apart.
    """
    out: dict[str, list[Path]] = {}
    for label, dirs in found.items():
        configs = {d: RunFolder(d).read_config() or {} for d in dirs}
        groups: dict[str, list[Path]] = {}
        for d in dirs:
            groups.setdefault(_experiment_key(configs[d]), []).append(d)
        if len(groups) == 1:
            out[label] = dirs
            continue
        firsts = [configs[g[0]] for g in groups.values()]
        names = sorted({k for c in firsts for k in c} - _POOLABLE_FIELDS)
        differing = [k for k in names if len({_short(c.get(k)) for c in firsts}) > 1][:3]
        for group in groups.values():
            cfg = configs[group[0]]
            tag = ", ".join(f"{k}={_short(cfg.get(k))}" for k in differing)
            name = f"{label} [{tag}]"
            while name in out or name in found:
                name += "'"
            out[name] = group
    return out


def _grid_labels(grid_dir: Path) -> dict[str, str]:
    """slug -> label from ``grid.json`` (empty when absent)."""
    try:
        data = json.loads((grid_dir / GRID_FILE).read_text())
        return {slugify(e["label"]): str(e["label"]) for e in data["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def discover_runs(paths: Iterable[Path | str]) -> dict[str, list[Path]]:
    """Map label -> run folders found under ``paths`` (order of first appearance)."""
    found: dict[str, list[Path]] = {}

    def add(label: str, run: Path) -> None:
        runs = found.setdefault(label, [])
        if run not in runs:
            runs.append(run)

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a folder")
        if _is_run_dir(path):
            label = path.parent.name if _SEED_DIR.match(path.name) else path.name
            add(label, path)
            continue
        seed_dirs = sorted(p for p in path.iterdir() if p.is_dir() and _is_run_dir(p))
        if seed_dirs and all(_SEED_DIR.match(p.name) for p in seed_dirs):
            for run in seed_dirs:  # a label folder
                add(path.name, run)
            continue
        labels = _grid_labels(path)
        order = list(labels) + sorted(
            p.name for p in path.iterdir() if p.is_dir() and p.name not in labels
        )
        for slug in order:
            sub = path / slug
            if not sub.is_dir():
                continue
            runs = sorted(p for p in sub.iterdir() if p.is_dir() and _is_run_dir(p))
            for run in runs:
                add(labels.get(slug, slug), run)
    return found


#: x axes of :func:`plot_runs`: metrics-row key -> axis label.
X_AXES = {"epoch": "epoch", "step": "optimizer step",
          "wall_time": "wall-clock seconds (training + evaluation)"}


def _series(
    runs: Sequence[list[dict[str, Any]]], key: str, scale: float, x: str = "epoch"
) -> tuple[list[float], list[float], list[float], list[float]]:
    """x, mean, min, max of ``key`` over runs (each epoch over the runs that have it).

    Points are grouped by epoch; the x of a point is the mean over those runs of the rows'
    ``x`` field (for ``wall_time``, seeds reach an epoch at different seconds: the curve puts
    the mean metric at the mean time, the band spans the metric only).
    """
    by_epoch: dict[float, list[float]] = {}
    x_of: dict[float, list[float]] = {}
    for records in runs:
        for i, rec in enumerate(records):
            value = rec.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if not math.isfinite(float(value)):
                continue
            epoch = float(rec.get("epoch", i + 1))
            xv = epoch if x == "epoch" else rec.get(x)
            if not isinstance(xv, (int, float)) or not math.isfinite(float(xv)):
                continue
            by_epoch.setdefault(epoch, []).append(float(value) * scale)
            x_of.setdefault(epoch, []).append(float(xv))
    epochs = sorted(by_epoch)
    xs = [sum(x_of[e]) / len(x_of[e]) for e in epochs]
    mean = [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
    lo = [min(by_epoch[e]) for e in epochs]
    hi = [max(by_epoch[e]) for e in epochs]
    return xs, mean, lo, hi


def _has(groups: Sequence[_Group], key: str) -> bool:
    return any(
        isinstance(rec.get(key), (int, float)) for g in groups for run in g.runs for rec in run
    )


def _panel_spec(groups: Sequence[_Group], split: str, what: str) -> tuple[str, str, float] | None:
    """``(metric key, y label, scale)`` for one panel, or None when no run has the metric."""
    text = bool(groups) and all(g.text for g in groups)
    if what == "loss":
        if _has(groups, f"{split}_bpc"):
            return f"{split}_bpc", f"{split} bits per char", 1.0
        if _has(groups, f"{split}_loss"):
            if text:
                return f"{split}_loss", f"{split} bits per char", 1.0 / math.log(2.0)
            return f"{split}_loss", f"{split} loss (cross-entropy)", 1.0
        return None
    key = f"{split}_acc"
    if not _has(groups, key):
        return None
    vals = [
        float(rec[key]) for g in groups for run in g.runs for rec in run
        if isinstance(rec.get(key), (int, float))
    ]
    scale = 100.0 if vals and max(vals) <= 1.0 else 1.0
    noun = "next-char accuracy" if text else "accuracy"
    return key, f"{split} {noun} (%)", scale


def plot_runs(
    runs: Path | str | Sequence[Path | str],
    out_png: Path | str,
    title: str | None = None,
    *,
    band: str = "minmax",
    x: str = "epoch",
    reference: dict[str, float] | None = None,
) -> Path:
    """Draw the 2x2 training-curve figure for ``runs`` into ``out_png``; return its path.

    ``runs`` is a grid folder, a run folder, or a list of either; runs of one label from
    different experiments are drawn apart (:func:`split_experiments`). ``band`` is ``"minmax"``
    (shaded min-max over seeds) or ``"std"`` (mean ± sample std). ``x`` is the metrics field
    on the x axis (:data:`X_AXES`: ``"epoch"``, ``"step"`` or ``"wall_time"``); ``reference``
    maps a metric key (e.g. ``"test_acc"``, as a fraction like the rows) to a value drawn as a
    dashed line on the panel of that key (a target). Raises ``FileNotFoundError`` when no run
    with metrics is found, ``ValueError`` for an unknown ``x``.
    """
    if x not in X_AXES:
        raise ValueError(f"x={x!r} (must be one of {', '.join(X_AXES)})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [runs] if isinstance(runs, (str, Path)) else list(runs)
    found = split_experiments(discover_runs(paths))
    groups: list[_Group] = []
    for label, dirs in found.items():
        group = _Group(label)
        for d in dirs:
            folder = RunFolder(d)
            records = folder.read_metrics()
            if records:
                group.runs.append(records)
            ds = (folder.read_config() or {}).get("dataset")
            group.text = group.text or ds in TEXT_DATASETS
        if group.runs:
            groups.append(group)
    if not groups:
        raise FileNotFoundError(
            "no runs with metrics found in " + ", ".join(str(p) for p in paths)
        )

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.2), sharex=True)
    layout = [("train", "loss"), ("test", "loss"), ("train", "acc"), ("test", "acc")]
    cmap = plt.get_cmap("tab10")
    for ax, (split, what) in zip(axes.flat, layout):
        spec = _panel_spec(groups, split, what)
        if spec is None:
            ax.text(0.5, 0.5, f"no {split} {'loss' if what == 'loss' else 'accuracy'} recorded",
                    ha="center", va="center", transform=ax.transAxes, color="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        key, ylabel, scale = spec
        for gi, group in enumerate(groups):
            xs, mean, lo, hi = _series(group.runs, key, scale, x)
            if not xs:
                continue
            color = cmap(gi % 10)
            n = len(group.runs)
            ax.plot(xs, mean, color=color, lw=1.6, marker="o" if len(xs) < 4 else None,
                    ms=3, label=f"{group.label} (n={n})")
            if n > 1:
                if band == "std":
                    kept = _with_x(group.runs, x)  # the rows behind xs, grouped by epoch
                    lo, hi = _std_band(kept, key, scale, _series(kept, key, scale)[0], mean)
                ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
        if reference and key in reference:
            ax.axhline(reference[key] * scale, color="black", ls="--", lw=1.0,
                       label=f"target {reference[key] * scale:g}")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if what == "loss" and _positive(groups, key):
            ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    for ax in axes[1]:
        ax.set_xlabel(X_AXES[x])
        if x != "wall_time":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = [], []
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        if h:
            handles, labels = h, lab
            break
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False,
                   fontsize=9)
    band_text = "min–max" if band == "minmax" else "±1 std"
    subtitle = f"mean over seeds, shaded {band_text}"
    head = title or _default_title(paths)
    fig.suptitle(f"{head} — {subtitle}" if head else subtitle, fontsize=11)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 0.97))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _default_title(paths: Sequence[Path | str]) -> str:
    """``"<dataset> / <model>, batch size <b>"`` from a grid folder's base config, else ""."""
    if len(paths) != 1:
        return ""
    try:
        cfg = json.loads((Path(paths[0]) / GRID_FILE).read_text())["base_config"]
        return f"{cfg['dataset']} / {cfg['model']}, batch size {cfg['batch_size']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _positive(groups: Sequence[_Group], key: str) -> bool:
    vals = [rec.get(key) for g in groups for run in g.runs for rec in run]
    nums = [float(v) for v in vals if isinstance(v, (int, float))]
    return bool(nums) and min(nums) > 0 and max(nums) / min(nums) > 20


def _with_x(runs: Sequence[list[dict[str, Any]]], x: str) -> list[list[dict[str, Any]]]:
    """The rows of each run that have a finite ``x`` value (all rows for ``"epoch"``)."""
    if x == "epoch":
        return [list(r) for r in runs]
    return [[rec for rec in records if isinstance(rec.get(x), (int, float))
             and math.isfinite(float(rec[x]))] for records in runs]


def _std_band(
    runs: Sequence[list[dict[str, Any]]], key: str, scale: float,
    epochs: list[float], mean: list[float],
) -> tuple[list[float], list[float]]:
    by_epoch: dict[float, list[float]] = {}
    for records in runs:
        for i, rec in enumerate(records):
            v = rec.get(key)
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                by_epoch.setdefault(float(rec.get("epoch", i + 1)), []).append(float(v) * scale)
    lo, hi = [], []
    for e, m in zip(epochs, mean):
        vals = by_epoch.get(e, [])
        s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        lo.append(m - s)
        hi.append(m + s)
    return lo, hi
