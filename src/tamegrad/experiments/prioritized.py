"""Prioritized SGD's suites (Zhou and Gao, IC2E 2021; issue 15; docs/PRIORITIZED.md).

``prioritized-cifar10`` (v1)
    The paper evaluates an MLP and a CNN: both on CIFAR-10 with four samplers at equal compute
    (the same epochs, the same lr per model): uniform mini-batch SGD, priority sampling with
    importance weights (unbiased), pure prioritisation (biased, weights 1) and InfoBatch. The
    results add, per model, the epochs, steps and wall-clock seconds each arm needs to reach a
    test accuracy fixed in advance (:data:`TARGETS`), with every sampler cost inside the
    seconds (the trainer's ``wall_time`` runs around the whole loop).

``prioritized-cifar10-lr`` (v1)
    The learning-rate sweep that fixed :data:`LR`: uniform sampling only, seed 0, lr
    ``{1/3, 1, 3} x 0.05`` per model, at the same profiles. The best final test accuracy picks
    each model's lr, used by every arm of ``prioritized-cifar10`` (the priority arms are not
    tuned separately: equal tuning budget, favouring uniform if anything).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry, read_grid, slugify
from tamegrad.train.targets import (
    Target,
    format_target_table,
    plot_against,
    target_rows,
    target_table_note,
)

from ._suite import ProfileSpec, Suite, cifar10_config
from .sweeps import OptimizerFamily, sweep_entries

#: The two models of the paper's evaluation (``TrainConfig`` overrides). The MLP's size is
#: fixed (two hidden layers of 512); the CNN is ``cnn`` (3 x conv-BN-ReLU-pool, widths w, 2w,
#: 4w) at the profile's ``width``.
MODELS: dict[str, dict[str, Any]] = {
    "MLP": {"model": "mlp", "model_options": {"hidden": [512, 512]}},
    "CNN": {"model": "cnn", "model_options": {"depth": 3}},
}

#: The four arms: label -> (sampler, sampler options). Priority: loss scores, floor eps = 0.1
#: (every weight <= 10), with replacement; InfoBatch: prune half the well-learned examples,
#: full data in the last 12.5% of the epochs (the paper's defaults).
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "uniform": ("uniform", {}),
    "priority": ("priority", {"eps": 0.1}),
    "priority-pure": ("priority", {"eps": 0.1, "unbiased": False}),
    "InfoBatch": ("infobatch", {"prune_frac": 0.5, "anneal_frac": 0.125}),
}

#: Learning rate of every arm, per model: the best final test accuracy of the uniform arm in
#: ``prioritized-cifar10-lr`` (cpu profile, seed 0, ``--extend-edges``; see
#: docs/PRIORITIZED.md): MLP 0.0167 (43.95%; 5.57e-3: 41.86, 0.05: 40.31, 0.15 diverged), CNN
#: 0.45 (57.96%; 0.15: 57.59, 1.35: 39.36, 0.05: 54.19, 0.0167: 48.45).
LR: dict[str, float] = {"MLP": 0.0167, "CNN": 0.45}

#: Centre of the lr sweep (x 1/3, 1, 3): SGD with momentum 0.9 at batch 128.
LR_SWEEP_CENTRE = 0.05

#: Test accuracy targets, fixed before any prioritized arm ran: profile -> model -> accuracy.
#: cpu: the test accuracy of the uniform sweep run at the chosen lr (seed 0) at half of its
#: epochs (epoch 5 of 10: MLP 41.47%, CNN 43.95%), rounded down to a whole percent, so uniform
#: reaches it mid-run and a faster or slower arm has room on either side. full: typical values
#: for these models at 30 epochs on the whole training set (not measured here). smoke: numbers
#: are noise; 0.10 is chance level, reached or not.
TARGETS: dict[str, dict[str, float]] = {
    "smoke": {"MLP": 0.10, "CNN": 0.10},
    "cpu": {"MLP": 0.41, "CNN": 0.43},
    "full": {"MLP": 0.55, "CNN": 0.85},
}


def prioritized_base() -> TrainConfig:
    """SGD momentum 0.9, batch 128, weight decay 5e-4, cosine lr over 30 epochs, augmentation
    (random crop + flip) for both models, standard CIFAR-10 normalisation."""
    return cifar10_config(
        model="cnn",
        optimizer="sgd",
        optimizer_kwargs={"momentum": 0.9},
        lr=0.05,
        batch_size=128,
        weight_decay=5e-4,
        schedule="cosine",
        epochs=30,
    )


def prioritized_entries() -> list[GridEntry]:
    """Model x arm, each at its model's :data:`LR`; labels ``"<model> <arm>"``."""
    entries = []
    for model, overrides in MODELS.items():
        for arm, (sampler, options) in ARMS.items():
            entries.append(GridEntry(
                f"{model} {arm}", "sgd", LR[model], {"momentum": 0.9},
                overrides={**overrides, "sampler": sampler, "sampler_options": dict(options)},
            ))
    return entries


def lr_sweep_entries() -> list[GridEntry]:
    """Uniform sampling, per model, at lr ``{1/3, 1, 3} x`` :data:`LR_SWEEP_CENTRE`."""
    families = [OptimizerFamily(f"{model} uniform", "sgd", LR_SWEEP_CENTRE, {"momentum": 0.9},
                                dict(overrides)) for model, overrides in MODELS.items()]
    return sweep_entries(families, (128,), reference_batch=128)


def _sampler_costs(out: Path, label: str, seeds: list[int]) -> tuple[float, float] | None:
    """Mean over finished seeds of (sampler seconds, their share of wall_time)."""
    from tamegrad.train.grid import run_dir_for
    from tamegrad.train.run_folder import RunFolder

    pairs = []
    for seed in seeds:
        folder = RunFolder(run_dir_for(out, label, seed))
        rows = folder.read_metrics()
        if folder.status() != "completed" or not rows:
            continue
        secs = sum(float(r.get("sampler_bookkeeping_seconds", 0.0))
                   + float(r.get("sampler_scoring_seconds", 0.0)) for r in rows)
        wall = float(rows[-1].get("wall_time", 0.0))
        if "sampler_bookkeeping_seconds" in rows[0] and wall > 0:
            pairs.append((secs, secs / wall))
    if not pairs:
        return None
    return (sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs))


def prioritized_report(out: Path, profile: str) -> str:
    """Per model: time to the profile's target (:data:`TARGETS`), sampler costs, and the
    curves against epochs and seconds (``curves_<model>_epoch.png``,
    ``curves_<model>_wall_time.png``)."""
    grid = read_grid(out)
    labels = [e.label for e in grid.entries]
    parts = []
    for model in MODELS:
        target = Target("test_acc", TARGETS[profile][model])
        mine = [lab for lab in labels if lab.startswith(f"{model} ")]
        if not mine:
            continue
        rows = [r for r in target_rows(out, target) if r["label"] in mine]
        ref = f"{model} uniform" if f"{model} uniform" in mine else None
        lines = [f"## {model}: time to test accuracy >= {100 * target.value:g}% "
                 "(fixed in advance)", "",
                 format_target_table(rows, target, reference=ref), ""]
        by_label = {r["label"]: r for r in rows}
        ref_steps = by_label[ref]["step_mean"] if ref is not None else None
        costs = []
        for lab in mine:
            c = _sampler_costs(out, lab, grid.seeds)
            share = 0.0 if lab == ref else (None if c is None else c[1])
            steps = by_label[lab]["step_mean"]
            est = ("–" if share is None or steps is None or ref_steps is None
                   else f"{ref_steps / (steps * (1 + share)):.2f}x")
            if by_label[lab]["n_completed"] == 0:
                spent = "– | –"
            else:  # uniform runs have no sampler: nothing spent
                spent = "0 | 0" if c is None else f"{c[0]:.2f} | {100 * c[1]:.2f}"
            costs.append(f"| {lab} | {spent} | {est} |")
        lines += [
            "Sampler bookkeeping + scoring seconds per run (inside the seconds above), and a "
            "load-free estimate of the speed-up to target: uniform's steps to target / (the "
            "arm's steps x (1 + its sampler share of the wall time)), i.e. every step costing "
            "the same plus the arm's own sampler time (evaluation time left out):", "",
            "| arm | sampler s / run | % of wall time | load-free speed-up vs uniform |",
            "|---|---|---|---|", *costs, ""]
        try:
            folders = [out / slugify(lab) for lab in mine if (out / slugify(lab)).is_dir()]
            figs = plot_against(folders, out / f"curves_{model.lower()}",
                                title=f"{model} ({profile})", target=target)
            lines.append("Curves: " + ", ".join(f"`{p.name}`" for p in figs))
        except FileNotFoundError:
            pass
        parts.append("\n".join(lines))
    notes = target_table_note(
        "Epochs/steps/seconds",
        "Seconds are the trainer's `wall_time`: training "
        "and the per-epoch evaluation, with every sampler cost (draws, updates, exchange) "
        "inside. samples/s = optimizer steps x batch / wall_time (per process). Speed-up = "
        "uniform's mean seconds / the arm's."
    )
    return "\n\n".join([*parts, notes]) if parts else ""


_SMOKE = ProfileSpec(
    {"width": 4, "epochs": 2, "train_subset": 256, "batch_size": 32, "limit_train_batches": 2,
     "device": "cpu"},
    (0,),
    "keeps the suite working (CI): 2 x 2 steps per configuration; numbers are noise",
)
_CPU = ProfileSpec(
    {"width": 16, "epochs": 10, "train_subset": 10_000, "device": "cpu"},
    (0, 1, 2),
    "CNN width 16 and the 512-512 MLP, 10,000 training images (class-balanced), full test set, "
    "10 epochs, 3 seeds: 24 runs, 1-2.5 h with --workers 1 on the shared 2-core machine "
    "(MLP runs took 40-125 s, CNN runs 170-500 s, depending on the load; docs/PRIORITIZED.md)",
)

PRIORITIZED_CIFAR10 = Suite(
    "prioritized-cifar10",
    1,
    "MLP and CNN on CIFAR-10: uniform vs priority (unbiased), priority (pure) and InfoBatch at "
    "equal epochs and lr; final accuracy and epochs and seconds to a fixed target",
    prioritized_base,
    prioritized_entries,
    {
        "smoke": _SMOKE,
        "cpu": _CPU,
        "full": ProfileSpec(
            {}, (0, 1, 2),
            "CNN width 64, the whole training set, 30 epochs (GPU); the lr of the cpu sweep "
            "(re-sweep with prioritized-cifar10-lr --profile full for a tuned full run)",
        ),
    },
    report=prioritized_report,
)

PRIORITIZED_CIFAR10_LR = Suite(
    "prioritized-cifar10-lr",
    1,
    "the lr sweep behind prioritized-cifar10: uniform sampling, lr {1/3, 1, 3} x 0.05 per "
    "model, seed 0",
    prioritized_base,
    lr_sweep_entries,
    {
        "smoke": _SMOKE,
        "cpu": ProfileSpec(_CPU.changes, (0,), "the cpu profile's setting, seed 0"),
        "full": ProfileSpec({}, (0,), "the full profile's setting, seed 0 (GPU)"),
    },
)
