"""Named, versioned experiment suites: ``tamegrad reproduce SUITE --profile PROFILE``.

A suite is a grid (optimizer entries x seeds) over one base :class:`TrainConfig`, run with the
resumable grid runner of :mod:`tamegrad.train.compare`, plus a results table and figure.
The suite's ``version`` is written into the grid folder; bump it whenever a change to the suite
would change its numbers, so that old and new results are never mixed in one table.

Suites:

``tr-cifar10`` (v1)
    The IJCAI 2019 TR claim at batch size 8 on CIFAR-10 (ResNet-18, weight decay 1e-4, step
    schedule x0.1 at 50% / x0.01 at 75%), with the paper's four optimizers and the controls the
    paper lacks: lr-matched SGD and Adam (TR's mean inner step is H_10/10 = 0.293 of its nominal
    lr), SGD with gradient accumulation to an effective batch of 128 at batch-8 memory, and
    Lookahead(SGD).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tamegrad.train.compare import GridEntry
from tamegrad.train.config import TrainConfig

#: CIFAR-10 normalisation used by the paper's code.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

#: Mean step-size multiplier of a TR cycle with S = 10 and inner decay: H_10 / 10.
TR_MEAN_STEP_MULTIPLIER = sum(1.0 / (s + 1) for s in range(10)) / 10


@dataclass(frozen=True)
class SuiteRun:
    """What one (suite, profile) runs."""

    base: TrainConfig
    entries: list[GridEntry]
    seeds: list[int]
    notes: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    profiles: dict[str, Callable[[], SuiteRun]] = field(default_factory=dict)


def paper_entries() -> list[GridEntry]:
    """The paper's four: SGD and TRSGD at lr 0.1 (momentum 0.9, lambda_w 0.01), Adam and TRAdam
    at lr 1e-3 (lambda_w 1e-4), S = 10."""
    sgd = {"momentum": 0.9}
    return [
        GridEntry("SGD", "sgd", 0.1, dict(sgd)),
        GridEntry("TRSGD", "trsgd", 0.1, {**sgd, "lambda_w": 0.01, "inner_steps": 10}),
        GridEntry("Adam", "adam", 1e-3),
        GridEntry("TRAdam", "tradam", 1e-3, {"lambda_w": 1e-4, "inner_steps": 10}),
    ]


def _tr_cifar10_entries(accum_lr: float = 0.1) -> list[GridEntry]:
    sgd_lr, adam_lr = 0.1, 1e-3
    matched = TR_MEAN_STEP_MULTIPLIER
    sgd = {"momentum": 0.9}
    return [
        *paper_entries(),
        GridEntry(f"SGD lr-matched ({sgd_lr * matched:.3g})", "sgd", sgd_lr * matched, dict(sgd)),
        GridEntry(f"Adam lr-matched ({adam_lr * matched:.3g})", "adam", adam_lr * matched),
        GridEntry(
            "SGD accum x16 (eff. batch 128)",
            "sgd",
            accum_lr,
            dict(sgd),
            overrides={"grad_accum": 16},
        ),
        GridEntry("Lookahead(SGD)", "lookahead", sgd_lr, {**sgd, "k": 5, "alpha": 0.5}),
    ]


def _tr_cifar10_base(**changes: Any) -> TrainConfig:
    base = TrainConfig(
        dataset="cifar10-jpeg",
        model="resnet18",
        width=64,
        batch_size=8,
        weight_decay=1e-4,
        schedule="step",
        epochs=200,
        augment=True,
        norm_mean=CIFAR10_MEAN,
        norm_std=CIFAR10_STD,
        eval_batch_size=500,
    )
    return replace(base, **changes)


def _tr_cifar10_smoke() -> SuiteRun:
    return SuiteRun(
        base=_tr_cifar10_base(
            width=4, epochs=2, train_subset=320, limit_train_batches=20, device="cpu"
        ),
        entries=_tr_cifar10_entries(),
        seeds=[0],
        notes="keeps the suite working (CI): 2 x 20 steps per configuration; numbers are noise",
    )


def _tr_cifar10_cpu() -> SuiteRun:
    return SuiteRun(
        base=_tr_cifar10_base(width=16, epochs=10, train_subset=10_000, device="cpu"),
        entries=_tr_cifar10_entries(),
        seeds=[0, 1, 2],
        notes="ResNet-18 width 16, 10,000 training images (class-balanced), full test set",
    )


def _tr_cifar10_full() -> SuiteRun:
    return SuiteRun(
        base=_tr_cifar10_base(epochs=200),
        entries=_tr_cifar10_entries(),
        seeds=[0, 1, 2],
        notes="the paper's setting: width 64, 50,000 images, 200 epochs (GPU)",
    )


def _tr_cifar10_gpu_hour() -> SuiteRun:
    return SuiteRun(
        base=_tr_cifar10_base(epochs=15, train_subset=20_000),
        entries=_tr_cifar10_entries(),
        seeds=[0],
        notes="a shortened full profile that fits about an hour of one GPU",
    )


SUITES: dict[str, Suite] = {
    "tr-cifar10": Suite(
        "tr-cifar10",
        1,
        "TR vs SGD/Adam at batch 8 on CIFAR-10, with lr-matched, accumulation and Lookahead "
        "controls",
        {
            "smoke": _tr_cifar10_smoke,
            "cpu": _tr_cifar10_cpu,
            "full": _tr_cifar10_full,
            "full-short": _tr_cifar10_gpu_hour,
        },
    ),
}


def available_suites() -> list[str]:
    return sorted(SUITES)


def suite_run(name: str, profile: str) -> SuiteRun:
    """The grid of ``name`` at ``profile``; clear errors for unknown names."""
    if name not in SUITES:
        raise ValueError(f"Unknown suite {name!r}. Valid suites: {', '.join(available_suites())}")
    suite = SUITES[name]
    if profile not in suite.profiles:
        raise ValueError(
            f"Unknown profile {profile!r} for suite {name!r}. "
            f"Valid profiles: {', '.join(sorted(suite.profiles))}"
        )
    return suite.profiles[profile]()


def prepare_suite(
    name: str,
    profile: str,
    out_dir: Path | str,
    *,
    seeds: list[int] | None = None,
    only: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[TrainConfig, list[GridEntry], list[int]]:
    """Resolve the grid of ``name``/``profile`` and stamp ``out_dir/suite.json``.

    ``seeds`` replaces the profile's seeds, ``only`` keeps the entries whose label starts with
    one of the given strings, ``overrides`` changes base-config fields (e.g. ``data_dir``, or
    ``dataset="cifar10"`` for the official files). Refuses a folder that holds another suite,
    version or profile, so results are never mixed.
    """
    spec = suite_run(name, profile)
    base = replace(spec.base, **(overrides or {}))
    entries = spec.entries
    if only:
        entries = [e for e in entries if any(e.label.startswith(o) for o in only)]
        if not entries:
            labels = ", ".join(e.label for e in spec.entries)
            raise ValueError(f"--only {only} matches no entry of {name!r}; entries: {labels}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"suite": name, "version": SUITES[name].version, "profile": profile,
            "notes": spec.notes}
    meta_path = out / "suite.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if (old.get("suite"), old.get("version"), old.get("profile")) != (
            name, meta["version"], profile
        ):
            raise ValueError(
                f"{out} holds results of {old.get('suite')} v{old.get('version')} "
                f"profile {old.get('profile')}; use another --out folder"
            )
    else:
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return base, entries, list(seeds if seeds is not None else spec.seeds)


def run_suite(
    name: str,
    profile: str,
    out_dir: Path | str,
    *,
    seeds: list[int] | None = None,
    only: list[str] | None = None,
    worker: int = 0,
    num_workers: int = 1,
    overrides: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> str:
    """Run (or continue) the suite's grid in this process; write and return the results table.

    Finished runs are skipped, so calling it again continues an interrupted grid; several
    workers may share one ``out_dir`` (see :func:`tamegrad.train.compare.run_grid`).
    """
    from tamegrad.train.compare import run_grid, write_results
    from tamegrad.train.plot import plot_runs

    base, entries, grid_seeds = prepare_suite(
        name, profile, out_dir, seeds=seeds, only=only, overrides=overrides
    )
    out = Path(out_dir)
    run_grid(base, entries, grid_seeds, out, worker=worker, num_workers=num_workers,
             progress=progress)
    table = write_results(out)
    with contextlib.suppress(FileNotFoundError):  # nothing finished yet
        plot_runs(out, out / "curves.png", title=f"{name} ({profile})")
    return table
