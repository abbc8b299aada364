"""The RAD paper's CIFAR-10 suite (Oktay et al., ICLR 2021; issue 13; docs/ESTIMATORS.md).

``rad-cifar10`` (v1)
    The paper's setting: its small CNN (``rad-cnn``, width 16), Adam, batch 150, keep_frac 0.1,
    a step-decayed lr, no augmentation. Five arms, each an lr sweep ``{1/3, 1, 3} x centre``
    (a ``family`` per arm, so ``best.md`` picks each arm's best lr):

    * ``exact`` at batch 150;
    * ``reduced`` : the exact gradient at the batch whose activation bytes equal RAD 0.1's at
      batch 150 (:data:`REDUCED_BATCH`, measured by :func:`equal_memory_batch`; the paper
      used 22);
    * ``RAD same``, ``RAD different``, ``RAD projection`` at batch 150, keep_frac 0.1.

    Every arm runs with the memory-lean ReLU / average pooling (``lean=True``; the exact arms
    through the exact method ``lean``): that is the paper's accounting (ReLU masks stay exact
    and cost a bit each), and without it RAD 0.1 keeps 0.88x the exact bytes on this network
    (docs/ESTIMATORS.md, Benchmark). All arms run the same number of optimizer steps (the
    paper compares curves against iterations): ``limit_train_batches`` steps per epoch.

    Stage 2 (3 seeds at the chosen lrs): ``tamegrad reproduce rad-cifar10 --profile P --out NEW
    --seeds 0 1 2 --best-of SWEEP`` copies each family's best seed-0 run of the finished sweep
    folder into NEW and runs seeds 1 and 2 (:func:`tamegrad.experiments.runner.seed_stage`).

What differs from the paper: the engine's ``"step"`` schedule (x0.1 at 50% and x0.01 at 75% of
the epochs) instead of the public code's x0.6 every 10,000 iterations; no weight decay (the
paper tuned one per arm); training examples drawn without replacement within an epoch (the
code samples with replacement); the lr tuned on a 3-point grid on seed 0 instead of a random
search; far fewer iterations on CPU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry, read_grid, run_dir_for, slugify

from ._suite import ProfileSpec, Suite, cifar10_config
from .sweeps import OptimizerFamily, sweep_entries

#: The paper's batch size and RAD memory fraction.
BATCH = 150
KEEP_FRAC = 0.1

#: The exact gradient's batch at RAD 0.1's activation bytes (``rad-cnn`` width 16, lean layers
#: on both sides, 32x32x3 inputs): ``equal_memory_batch()``, i.e.
#: ``python -m tamegrad.experiments.rad equal-memory`` (2026-12-01, torch 2.13.0 CPU): RAD 0.1
#: at batch 150 keeps 3,531,644 bytes (all three variants: the same values and an 8-byte seed
#: per layer); exact + lean keeps 3,515,428 at batch 22 and 3,675,220 at batch 23. The paper
#: also used 22.
REDUCED_BATCH = 22

#: Centre of every lr sweep at batch 150 (Adam); the reduced batch's is shifted by
#: sqrt(batch / 150) (``sweeps.batch_lr_scale``). The paper's tuned lrs: 1.24e-3 (exact),
#: 1.16e-3 (same), 2.14e-3 (different), 4.35e-4 (projection), 4.30e-4 (batch 22).
LR_CENTRE = 1e-3

_LEAN: dict[str, Any] = {"estimator": "lean"}


def _rad(variant: str) -> dict[str, Any]:
    return {"estimator": "rad", "keep_frac": KEEP_FRAC,
            "estimator_options": {"variant": variant, "lean": True}}


#: The five arms: family name -> (batch size, config overrides). In the order of the paper's
#: claim (the equal-memory pair first), so that a partial grid answers it first.
ARMS: dict[str, tuple[int, dict[str, Any]]] = {
    "reduced": (REDUCED_BATCH, _LEAN),
    "RAD different": (BATCH, _rad("different")),
    "exact": (BATCH, _LEAN),
    "RAD same": (BATCH, _rad("same")),
    "RAD projection": (BATCH, _rad("projection")),
}


def rad_entries() -> list[GridEntry]:
    """Arm x lr ``{1/3, 1, 3} x`` :data:`LR_CENTRE` (shifted by sqrt(batch / 150) for the
    reduced batch); labels ``"<arm> lr=<lr> b<batch>"``, family = arm. Order: every arm's
    centre lr first, then every arm's lower point, then the higher ones, so that a grid run
    in order (``--workers 1``) compares all arms early."""
    per_arm: list[list[GridEntry]] = []
    for arm, (batch, overrides) in ARMS.items():
        family = OptimizerFamily(arm, "adam", LR_CENTRE, {}, dict(overrides))
        per_arm.append(sweep_entries([family], (batch,), reference_batch=BATCH))
    return [points[i] for i in (1, 0, 2) for points in per_arm]


def rad_base() -> TrainConfig:
    """``rad-cnn`` width 16 on CIFAR-10, Adam, batch 150, step schedule, no augmentation;
    80 epochs of 250 steps (20,000 iterations, the paper's; evaluated every 250)."""
    return cifar10_config(
        model="rad-cnn",
        width=16,
        optimizer="adam",
        lr=LR_CENTRE,
        batch_size=BATCH,
        schedule="step",
        epochs=80,
        limit_train_batches=250,
        augment=False,
        eval_batch_size=1000,
    )


# ------------------------------------------------------------------ the equal-memory batch


def _step_fn(model: Any, shape: tuple[int, int, int], classes: int) -> Callable[[int], Any]:
    import torch
    import torch.nn.functional as F

    def step(b: int) -> Any:
        gen = torch.Generator().manual_seed(b)
        x = torch.randn(b, *shape, generator=gen)
        y = torch.randint(0, classes, (b,), generator=gen)
        return F.cross_entropy(model(x), y, reduction="none").mean()  # as the trainer

    return step


def equal_memory_batch(
    *, batch: int = BATCH, keep_frac: float = KEEP_FRAC, variant: str = "different",
    width: int = 16, shape: tuple[int, int, int] = (3, 32, 32), classes: int = 10,
) -> dict[str, int]:
    """The exact (lean) model's largest batch whose activation bytes fit RAD's at ``batch``.

    Measured with :class:`~tamegrad.estimators.ActivationMeter` on random inputs (the bytes
    depend only on shapes): ``budget`` = RAD ``variant`` at ``keep_frac`` and ``batch``
    (forward + per-example cross-entropy, as the trainer runs it), then
    :func:`~tamegrad.estimators.largest_batch_that_fits` on ``rad-cnn`` converted with the
    exact method ``lean``. Returns ``budget``, ``batch`` (the answer), ``bytes`` (its bytes)
    and ``next_bytes`` (batch + 1's).
    """
    import torch

    from tamegrad import estimators
    from tamegrad.models import create_model

    torch.manual_seed(0)
    rad = estimators.convert(
        create_model("rad-cnn", num_classes=classes, input_shape=shape, width=width),
        "rad", keep_frac=keep_frac, variant=variant, lean=True)
    budget = estimators.measure_activation_bytes(_step_fn(rad, shape, classes), batch,
                                                 model=rad)
    exact = estimators.convert(
        create_model("rad-cnn", num_classes=classes, input_shape=shape, width=width), "lean")
    step = _step_fn(exact, shape, classes)
    fit = estimators.largest_batch_that_fits(step, budget, model=exact, max_batch=batch)
    return {
        "budget": budget, "batch": fit,
        "bytes": estimators.measure_activation_bytes(step, fit, model=exact) if fit else 0,
        "next_bytes": estimators.measure_activation_bytes(step, fit + 1, model=exact),
    }


# ------------------------------------------------------------------------------ report


def _metrics(out: Path, label: str, seed: int) -> list[dict[str, Any]]:
    from tamegrad.train.run_folder import RunFolder

    folder = RunFolder(run_dir_for(out, label, seed))
    return folder.read_metrics() if folder.status() == "completed" else []


def _loss_at(rows: list[dict[str, Any]], frac: float, key: str = "train_loss") -> float | None:
    """``key`` of the epoch row at ``frac`` of the run (train loss: the epoch's mean)."""
    if not rows:
        return None
    row = rows[max(0, round(frac * len(rows)) - 1)]
    v = row.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def _fmt(values: list[float], digits: int = 3, scale: float = 1.0) -> str:
    import statistics

    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def rad_report(out: Path, profile: str) -> str:
    """Per arm at its best lr (``best.md``'s choice): training and test loss at 25/50/100% of
    the iterations, final and best test accuracy (mean ± sample std over finished seeds), the
    measured activation bytes per step (``mem_activation_bytes`` of the runs' metrics) and
    their ratio to the exact arm's; the curves of these runs against iterations
    (``curves_chosen_step.png``); and the stage-2 command once every sweep is complete."""
    from tamegrad.train.results import summarize
    from tamegrad.train.sweep import best_per_family, is_sweep

    rows = summarize(out)
    if not is_sweep(rows):
        return ""
    grid = read_grid(out)
    bests = [b for b in best_per_family(rows) if b["best_label"] is not None]
    if not bests:
        return ""
    lines = ["## Each arm at its best lr: loss against iterations, accuracy, bytes per step", "",
             "| arm | batch | lr | seeds | train loss @25% | @50% | @100% | test loss @25% "
             "| @50% | @100% | final test acc % | best test acc % | activation bytes / step "
             "| bytes / exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    exact_bytes = None
    table = []
    for b in bests:
        per_seed = [_metrics(out, b["best_label"], s) for s in grid.seeds]
        per_seed = [r for r in per_seed if r]
        mem = [int(r[0]["mem_activation_bytes"]) for r in per_seed
               if "mem_activation_bytes" in r[0]]
        nbytes = mem[0] if mem else None
        if b["family"] == "exact":
            exact_bytes = nbytes
        table.append((b, per_seed, nbytes))
    for b, per_seed, nbytes in table:
        losses = [[v for v in (_loss_at(r, f, key) for r in per_seed) if v is not None]
                  for key in ("train_loss", "test_loss") for f in (0.25, 0.5, 1.0)]
        acc = [float(r[-1]["test_acc"]) for r in per_seed if "test_acc" in r[-1]]
        best = [max(float(x["test_acc"]) for x in r if "test_acc" in x) for r in per_seed
                if any("test_acc" in x for x in r)]
        ratio = f"{nbytes / exact_bytes:.3f}" if nbytes and exact_bytes else "-"
        shown = f"{nbytes:,}" if nbytes is not None else "-"
        cells = [b["family"], str(b["batch_size"]), f"{b['best_lr']:g}", str(len(per_seed)),
                 *(_fmt(v) for v in losses), _fmt(acc, 2, 100), _fmt(best, 2, 100), shown,
                 ratio]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Losses: the metrics row at that fraction of the run (every arm runs the "
              "same iterations); train loss is the epoch's mean over its steps (noisy for the "
              "small batch: 50 x 22 examples per epoch on cpu), test loss the whole test set. "
              "Bytes: the "
              "activation bytes the first micro-batch of the run kept for backward "
              "(`ActivationMeter`, parameters excluded)."]
    try:
        from tamegrad.train.targets import plot_against

        folders = [out / slugify(b["best_label"]) for b, _, _ in table]
        figs = plot_against([f for f in folders if f.is_dir()], out / "curves_chosen",
                            title=f"rad-cifar10 ({profile}): each arm at its best lr",
                            axes=("step",))
        lines += ["", "Curves against iterations: " + ", ".join(f"`{p.name}`" for p in figs)]
    except FileNotFoundError:
        pass
    if all(b["complete"] for b in best_per_family(rows)) and set(grid.seeds) == {0}:
        lines += ["", "Stage 2 (3 seeds at the chosen lrs): `tamegrad reproduce rad-cifar10 "
                  f"--profile {profile} --out {out}-seeds --seeds 0 1 2 --best-of {out}`"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- profiles

_SMOKE = ProfileSpec(
    {"dataset": "digits", "norm_mean": None, "norm_std": None, "width": 4, "epochs": 2,
     "train_subset": 300, "limit_train_batches": 1, "device": "cpu"},
    (0,),
    "keeps the suite working (CI): the 8x8 digits instead of CIFAR-10 (evaluating the CIFAR-10 "
    "test set 30 times alone takes ~50 s of CPU), 2 x 1 steps per configuration; numbers are "
    "noise",
)
_CPU = ProfileSpec(
    {"epochs": 8, "train_subset": 10_000, "limit_train_batches": 50, "device": "cpu"},
    (0,),
    "rad-cnn width 16, 10,000 training images (class-balanced), full test set, 8 epochs of 50 "
    "steps (400 iterations; evaluated every 50); the lr sweep on seed 0, about 2-3 h with "
    "--workers 1 on the shared 2-core machine (measured: ~0.8 s per batch-150 step, ~0.12 s "
    "per batch-22 step, ~28 s per test-set evaluation); stage 2: seeds 0-2 at the chosen lrs "
    "(module doc)",
)

RAD_CIFAR10 = Suite(
    "rad-cifar10",
    1,
    "RAD (same / different sample, projection; keep_frac 0.1) vs exact training at batch 150 "
    "and at the batch of equal activation memory, rad-cnn on CIFAR-10, Adam, lr swept per arm",
    rad_base,
    rad_entries,
    {
        "smoke": _SMOKE,
        "cpu": _CPU,
        "full": ProfileSpec(
            {}, (0,),
            "the paper's setting: 50,000 images, 20,000 iterations (GPU); seed 0 sweep, then "
            "stage 2",
        ),
    },
    report=rad_report,
)


def main(argv: list[str] | None = None) -> int:
    """``equal-memory``: print :func:`equal_memory_batch` for each variant."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["equal-memory"]:
        for variant in ("different", "same", "projection"):
            print(variant, equal_memory_batch(variant=variant))
        return 0
    print("usage: python -m tamegrad.experiments.rad equal-memory "
          "(stage 2: tamegrad reproduce rad-cifar10 --best-of SWEEP_OUT)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
