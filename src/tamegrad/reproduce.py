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

``tr-cifar10-search`` (v1)
    The search for a TR setting that beats the best control of ``tr-cifar10``: five TRSGD
    settings (lambda_w, S, inner decay on/off) on the same base config, tuned on seed 0; the
    best one is then run on the held-out seeds 1 and 2 (``--seeds 1 2 --only LABEL``).

``gssgd-cifar10`` (v1)
    The Generalized SignSGD paper's CIFAR-10 comparison (constant lr, weight decay 1e-4) with
    ResNet-18 at the paper's batch 128 and at batch 8: GSSGD, Adam, SGD (Nesterov 0.9),
    clipped SGD, clipped SGD with momentum and normalised SGD, each with a 3-point lr sweep
    centred on the paper's tuned value (shifted by sqrt(8/128) = 1/4 at batch 8).

``gssgd-shakespeare`` (v1)
    The same six optimizers on a 2-layer character LSTM on Tiny Shakespeare (test bits per
    character), batch 64 and 8, constant lr, sweeps centred on the paper's Penn Treebank values.

See docs/GSSGD_EXPERIMENTS.md for the choices behind the two GSSGD suites.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from tamegrad._atomic import atomic_write_text
from tamegrad.train.compare import GridEntry
from tamegrad.train.config import TrainConfig
from tamegrad.train.sweep import (
    best_per_family,
    format_lr,
    is_sweep,
    parse_sweep_label,
    round_lr,
    sweep_label,
)

#: CIFAR-10 normalisation used by the paper's code.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

def mean_step_multiplier(inner_steps: int) -> float:
    """Mean step-size multiplier of a TR cycle of ``inner_steps`` with inner decay: H_S / S."""
    return sum(1.0 / (s + 1) for s in range(inner_steps)) / inner_steps


#: Mean step-size multiplier of a TR cycle with S = 10 and inner decay: H_10 / 10.
TR_MEAN_STEP_MULTIPLIER = mean_step_multiplier(10)


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


def tr_search_entries() -> list[GridEntry]:
    """The TRSGD settings tried against the best ``tr-cifar10`` control (lr-matched SGD).

    One axis at a time around the paper's setting (lr 0.1, lambda_w 0.01, S 10, inner decay on,
    which ``tr-cifar10`` already runs): the pull strength (lambda_w 1e-3, 3e-2), the cycle
    length (S 5, 20: mean inner step 0.457 and 0.180 of lr), and inner decay off at the
    lr-matched lr with the paper's lambda_w / lr ratio (TR's pull without its step-size cycle).
    """
    sgd = {"momentum": 0.9}
    matched = 0.1 * TR_MEAN_STEP_MULTIPLIER  # the lr of tr-cifar10's "SGD lr-matched"

    def tr(label: str, lr: float, **hp: Any) -> GridEntry:
        return GridEntry(f"TRSGD {label}", "trsgd", lr, {**sgd, "inner_steps": 10,
                                                          "lambda_w": 0.01, **hp})

    return [
        tr("lw=1e-3", 0.1, lambda_w=1e-3),
        tr("lw=3e-2", 0.1, lambda_w=3e-2),
        tr("S=5", 0.1, inner_steps=5),
        tr("S=20", 0.1, inner_steps=20),
        tr(f"no-decay lr={matched:.3g} lw={0.1 * matched:.3g}", matched,
           lambda_w=0.1 * matched, inner_decay=False),
    ]


def _tr_search_smoke() -> SuiteRun:
    return replace(_tr_cifar10_smoke(), entries=tr_search_entries())


def _tr_search_cpu() -> SuiteRun:
    return SuiteRun(
        base=_tr_cifar10_cpu().base,
        entries=tr_search_entries(),
        seeds=[0],
        notes="the tr-cifar10 cpu base config; tuning seed 0 (held-out seeds 1 and 2 are run "
        "for the selected entry only, with --seeds 1 2 --only LABEL)",
    )


# ----------------------------------------------------------------------------- GSSGD suites

#: Per-channel std of the Generalized SignSGD authors' CIFAR-10 loader (the true std of the
#: training images; their mean is :data:`CIFAR10_MEAN`).
GSSGD_CIFAR10_STD = (0.2470, 0.2435, 0.2616)

#: Learning rates of every sweep, as multiples of the family's (batch-shifted) centre.
SWEEP_FACTORS = (1 / 3, 1.0, 3.0)

#: Gradient-norm threshold of the "clipped momentum" entries (the trainer's ``clip_grad_norm``,
#: applied to the raw gradient before SGD's momentum), as in the paper's CIFAR-10 command.
CLIPPED_MOMENTUM_CLIP = 0.1


@dataclass(frozen=True)
class OptimizerFamily:
    """One optimizer of the GSSGD comparison: everything fixed except the learning rate.

    ``centre`` is the middle of the lr sweep at the suite's reference batch size;
    ``optimizer_kwargs`` go to :func:`tamegrad.optim.create`; ``overrides`` are the
    :class:`TrainConfig` changes the family needs (e.g. ``clip_grad_norm``).
    """

    name: str
    optimizer: str
    centre: float
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


def batch_lr_scale(batch_size: int, reference_batch: int) -> float:
    """Shift of a sweep's centre for another batch size: ``sqrt(batch / reference)``.

    The square-root rule (batch 128 -> 8 divides the centre by 4, 64 -> 8 by 2.83) sits between
    the linear rule usually quoted for SGD and no change, which is close to right for the
    normalised and sign-like methods; the 9x-wide sweep around it covers both.
    """
    return math.sqrt(batch_size / reference_batch)


def lr_sweep(centre: float, factors: tuple[float, ...] = SWEEP_FACTORS) -> list[float]:
    """The sweep's learning rates: ``centre * f`` for each factor, rounded by :func:`round_lr`."""
    return [round_lr(centre * f) for f in factors]


def sweep_entries(
    families: list[OptimizerFamily], batch_sizes: tuple[int, ...], reference_batch: int
) -> list[GridEntry]:
    """Grid entries ``family x batch size x lr``, labelled ``"<family> lr=<lr> b<batch>"``.

    Each family's centre is shifted by :func:`batch_lr_scale` for every batch size, then swept
    by :data:`SWEEP_FACTORS`. The batch size is an entry override, so both batch sizes share one
    grid, one results table and one figure. Order: batch size, family, increasing lr.
    """
    entries: list[GridEntry] = []
    for batch in batch_sizes:
        scale = batch_lr_scale(batch, reference_batch)
        for fam in families:
            for lr in lr_sweep(fam.centre * scale):
                entries.append(
                    GridEntry(
                        sweep_label(fam.name, format_lr(lr), batch),
                        fam.optimizer,
                        lr,
                        dict(fam.optimizer_kwargs),
                        overrides={**fam.overrides, "batch_size": batch},
                    )
                )
    return entries


def gssgd_families(
    *,
    gssgd: float,
    adam: float,
    sgd: float,
    clipped_sgd: float,
    clipped_sgd_max_norm: float,
    clipped_momentum: float,
    normalized_sgd: float,
) -> list[OptimizerFamily]:
    """The paper's six optimizers with the given lr centres (as in the authors' commands).

    * GSSGD and Adam: betas (0.9, 0.999), eps 1e-8 (no bias correction for GSSGD).
    * SGD: Nesterov momentum 0.9.
    * Clipped SGD: ``clipped-sgd`` without momentum, gradient clipped to global norm
      ``clipped_sgd_max_norm``. The authors' clipping parameter gamma bounds the STEP
      (``step = min(lr, gamma/||g||) * g``), which is exactly clipping the gradient to
      ``gamma / lr`` before an lr step: pass ``gamma / lr`` of their tuned pair.
    * Clipped momentum: ``sgd`` with Nesterov momentum 0.9 and the trainer's ``clip_grad_norm``
      = :data:`CLIPPED_MOMENTUM_CLIP` on the raw gradient, before the (un-averaged) momentum.
      Not the authors' algorithm (they clip the Nesterov direction after the momentum), so
      their lr does not carry over: see ``docs/GSSGD_EXPERIMENTS.md`` for the centre.
    * Normalised SGD: ``normalized-sgd`` with heavy-ball momentum 0.9 (step of length lr).
    """
    adaptive = {"betas": (0.9, 0.999), "eps": 1e-8}
    nesterov = {"momentum": 0.9, "nesterov": True}
    return [
        OptimizerFamily("GSSGD", "gssgd", gssgd, dict(adaptive)),
        OptimizerFamily("Adam", "adam", adam, dict(adaptive)),
        OptimizerFamily("SGD", "sgd", sgd, dict(nesterov)),
        OptimizerFamily(
            f"Clipped SGD c={clipped_sgd_max_norm:g}",
            "clipped-sgd",
            clipped_sgd,
            {"momentum": 0.0, "max_norm": clipped_sgd_max_norm},
        ),
        OptimizerFamily(
            f"Clipped momentum c={CLIPPED_MOMENTUM_CLIP:g}",
            "sgd",
            clipped_momentum,
            dict(nesterov),
            {"clip_grad_norm": CLIPPED_MOMENTUM_CLIP},
        ),
        OptimizerFamily("Normalized SGD", "normalized-sgd", normalized_sgd, {"momentum": 0.9}),
    ]


@dataclass(frozen=True)
class ProfileSpec:
    """A profile as data: changes to the suite's base config, seeds and a note."""

    changes: dict[str, Any]
    seeds: tuple[int, ...]
    notes: str


def _profile_run(
    base: Callable[[], TrainConfig],
    entries: Callable[[], list[GridEntry]],
    spec: ProfileSpec,
) -> SuiteRun:
    changes = copy.deepcopy(spec.changes)  # no dict shared between the configs it builds
    return SuiteRun(replace(base(), **changes), entries(), list(spec.seeds), spec.notes)


def profiles_from_specs(
    base: Callable[[], TrainConfig],
    entries: Callable[[], list[GridEntry]],
    specs: dict[str, ProfileSpec],
) -> dict[str, Callable[[], SuiteRun]]:
    """``Suite.profiles`` for a suite whose profiles differ only in base config and seeds."""
    return {name: partial(_profile_run, base, entries, spec) for name, spec in specs.items()}


#: Batch sizes of the CIFAR-10 suite; the first (the paper's) is the reference of the sweeps.
GSSGD_CIFAR10_BATCHES = (128, 8)


def gssgd_cifar10_families() -> list[OptimizerFamily]:
    """The paper's tuned CIFAR-10 values (batch 128) as centres."""
    return gssgd_families(
        gssgd=2e-4,
        adam=9e-4,
        sgd=0.07,
        clipped_sgd=0.5,
        clipped_sgd_max_norm=2.0,  # the authors' gamma = 1 at lr 0.5
        clipped_momentum=0.3,  # step length matched to the authors' gamma = 0.1 (see docs)
        normalized_sgd=0.1,
    )


def _gssgd_cifar10_entries() -> list[GridEntry]:
    batches = GSSGD_CIFAR10_BATCHES
    return sweep_entries(gssgd_cifar10_families(), batches, reference_batch=batches[0])


def _gssgd_cifar10_base() -> TrainConfig:
    return TrainConfig(
        dataset="cifar10-jpeg",
        model="resnet18",
        width=64,
        batch_size=GSSGD_CIFAR10_BATCHES[0],  # every entry sets its own batch size
        weight_decay=1e-4,
        schedule="constant",
        epochs=164,
        augment=True,
        norm_mean=CIFAR10_MEAN,
        norm_std=GSSGD_CIFAR10_STD,
        eval_batch_size=500,
    )


_GSSGD_CIFAR10_PROFILES = {
    "smoke": ProfileSpec(
        {"width": 4, "epochs": 2, "train_subset": 256, "limit_train_batches": 4,
         "device": "cpu"},
        (0,),
        "keeps the suite working (CI): 2 x (2 or 4) steps per configuration; numbers are noise",
    ),
    "cpu": ProfileSpec(
        {"width": 16, "epochs": 5, "train_subset": 10_000, "device": "cpu"},
        (0,),
        "ResNet-18 width 16, 10,000 training images (class-balanced), 5 epochs, full test set, "
        "one seed per sweep point: about 2.5 h on 2 cores with --workers 2",
    ),
    "full": ProfileSpec(
        {},
        (0, 1, 2),
        "the paper's protocol with ResNet-18 (width 64): 50,000 images, 164 epochs, constant lr "
        "(GPU)",
    ),
}


#: Batch sizes of the Shakespeare suite; the first is the reference of the sweeps.
GSSGD_SHAKESPEARE_BATCHES = (64, 8)


def gssgd_shakespeare_families() -> list[OptimizerFamily]:
    """Centres from the paper's Penn Treebank LSTM commands (batch 40, used as-is at 64)."""
    return gssgd_families(
        gssgd=1e-3,
        adam=2e-3,
        sgd=1.0,
        clipped_sgd=50.0,
        clipped_sgd_max_norm=0.2,  # the authors' gamma = 10 at lr 50
        clipped_momentum=8.0,  # step length matched to the authors' gamma = 2.5 (see docs)
        normalized_sgd=2.0,
    )


def _gssgd_shakespeare_entries() -> list[GridEntry]:
    batches = GSSGD_SHAKESPEARE_BATCHES
    return sweep_entries(gssgd_shakespeare_families(), batches, reference_batch=batches[0])


def _gssgd_shakespeare_base() -> TrainConfig:
    return TrainConfig(
        dataset="tinyshakespeare",
        model="char-lstm",
        width=512,
        model_options={"num_layers": 2, "dropout": 0.2},
        batch_size=GSSGD_SHAKESPEARE_BATCHES[0],  # every entry sets its own batch size
        seq_len=128,
        weight_decay=0.0,
        schedule="constant",
        epochs=20,
        augment=False,
        eval_batch_size=256,
    )


_GSSGD_SHAKESPEARE_PROFILES = {
    "smoke": ProfileSpec(
        {"width": 32, "model_options": {"num_layers": 2, "dropout": 0.0}, "seq_len": 32,
         "epochs": 2, "train_subset": 256, "limit_train_batches": 4, "device": "cpu"},
        (0,),
        "keeps the suite working (CI): hidden 32, 2 x 4 steps per configuration; numbers are "
        "noise",
    ),
    "cpu": ProfileSpec(
        {"width": 256, "model_options": {"num_layers": 2, "dropout": 0.0}, "seq_len": 64,
         "epochs": 4, "device": "cpu"},
        (0,),
        "2-layer LSTM, hidden 256, windows of 64 characters, the whole training split, 4 "
        "epochs, one seed per sweep point: about 2.3 h on 2 cores with --workers 2",
    ),
    "full": ProfileSpec(
        {},
        (0, 1, 2),
        "2-layer LSTM, hidden 512, dropout 0.2, windows of 128 characters, 20 epochs (GPU)",
    ),
}


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
    "tr-cifar10-search": Suite(
        "tr-cifar10-search",
        1,
        "TRSGD settings (lambda_w, S, inner decay) searched on seed 0 against the best "
        "tr-cifar10 control, the selected one evaluated on held-out seeds",
        {"smoke": _tr_search_smoke, "cpu": _tr_search_cpu},
    ),
    "gssgd-cifar10": Suite(
        "gssgd-cifar10",
        1,
        "Generalized SignSGD vs Adam, SGD, clipped SGD (+momentum), normalised SGD on CIFAR-10 "
        "at batch 128 and 8, constant lr, 3-point lr sweeps",
        profiles_from_specs(_gssgd_cifar10_base, _gssgd_cifar10_entries, _GSSGD_CIFAR10_PROFILES),
    ),
    "gssgd-shakespeare": Suite(
        "gssgd-shakespeare",
        1,
        "the same six optimizers on a 2-layer char-LSTM on Tiny Shakespeare (test bits per "
        "character) at batch 64 and 8, constant lr, 3-point lr sweeps",
        profiles_from_specs(
            _gssgd_shakespeare_base, _gssgd_shakespeare_entries, _GSSGD_SHAKESPEARE_PROFILES
        ),
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


#: Learning-rate points a sweep may grow by on each side (``extend_sweeps``): with the 3x step
#: of :data:`SWEEP_FACTORS`, up to 9x beyond the suite's own lowest or highest lr.
MAX_EXTENSIONS_PER_SIDE = 2

#: Key of ``suite.json`` holding the points added by :func:`extend_sweeps`.
EXTENSIONS_KEY = "extensions"

SUITE_FILE = "suite.json"


def _read_meta(out: Path) -> dict[str, Any]:
    path = out / SUITE_FILE
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


def with_extensions(
    entries: list[GridEntry], extensions: list[dict[str, Any]]
) -> list[GridEntry]:
    """``entries`` plus the recorded sweep extensions, each family's points in lr order.

    An extension ``{"family", "batch_size", "lr"}`` copies the entry of the same family and
    batch size (optimizer, its kwargs, overrides) at a new lr; one whose family is not among
    ``entries`` (e.g. left out by ``--only``) is skipped.
    """
    templates: dict[tuple[str, int], GridEntry] = {}
    for e in entries:
        parsed = parse_sweep_label(e.label)
        if parsed is not None:
            templates.setdefault((parsed.family, parsed.batch_size), e)
    labels = {e.label for e in entries}
    extra: list[GridEntry] = []
    for ext in extensions:
        key = (str(ext["family"]), int(ext["batch_size"]))
        if key not in templates:
            continue
        lr = float(ext["lr"])
        label = sweep_label(key[0], format_lr(lr), key[1])
        if label not in labels:
            labels.add(label)
            extra.append(replace(templates[key], label=label, lr=lr))
    if not extra:
        return list(entries)
    order = {key: i for i, key in enumerate(templates)}

    def position(e: GridEntry) -> tuple[int, float]:
        parsed = parse_sweep_label(e.label)
        if parsed is None:
            return (-1, 0.0)
        return (order[(parsed.family, parsed.batch_size)], parsed.lr)

    return sorted([*entries, *extra], key=position)


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
    ``dataset="cifar10"`` for the official files). Sweep points added to the folder by
    :func:`extend_sweeps` join the grid. Refuses a folder that holds another suite, version or
    profile, so results are never mixed.
    """
    spec = suite_run(name, profile)
    base = replace(spec.base, **(overrides or {}))
    out = Path(out_dir)
    old = _read_meta(out)
    entries = with_extensions(spec.entries, list(old.get(EXTENSIONS_KEY, [])))
    if only:
        entries = [e for e in entries if any(e.label.startswith(o) for o in only)]
        if not entries:
            labels = ", ".join(e.label for e in spec.entries)
            raise ValueError(f"--only {only} matches no entry of {name!r}; entries: {labels}")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"suite": name, "version": SUITES[name].version, "profile": profile,
            "notes": spec.notes}
    if old:
        if (old.get("suite"), old.get("version"), old.get("profile")) != (
            name, meta["version"], profile
        ):
            raise ValueError(
                f"{out} holds results of {old.get('suite')} v{old.get('version')} "
                f"profile {old.get('profile')}; use another --out folder"
            )
    else:
        atomic_write_text(out / SUITE_FILE, json.dumps(meta, indent=2) + "\n")
    return base, entries, list(seeds if seeds is not None else spec.seeds)


def extend_sweeps(name: str, profile: str, out_dir: Path | str) -> list[str]:
    """Add one lr point beyond every sweep whose best lr sits at its edge; return the labels.

    Reads the folder's results (the entries of its last run): for each family and batch size
    whose sweep is complete and whose best lr is the lowest (highest) swept, records in
    ``suite.json`` a point one sweep step (3x) lower (higher), at most
    :data:`MAX_EXTENSIONS_PER_SIDE` beyond the suite's own range on each side. The next run of
    the suite on this folder includes them. Returns ``[]`` when every sweep brackets its best
    (or may grow no further), and for suites that are not learning-rate sweeps.
    """
    from tamegrad.train.compare import summarize

    out = Path(out_dir)
    rows = summarize(out)
    if not is_sweep(rows):
        return []
    meta = _read_meta(out)
    extensions = list(meta.get(EXTENSIONS_KEY, []))
    own: dict[tuple[str, int], list[float]] = {}
    for e in suite_run(name, profile).entries:
        parsed = parse_sweep_label(e.label)
        if parsed is not None:
            own.setdefault((parsed.family, parsed.batch_size), []).append(parsed.lr)
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


def write_suite_outputs(name: str, profile: str, out_dir: Path | str) -> str:
    """Write the folder's ``results.md``/``.json`` and figures; return the results table.

    Figures: ``curves.png`` (every entry), and for learning-rate sweeps ``best.md``,
    ``best_curves_b<batch>.png`` and ``sweep.png`` (:mod:`tamegrad.train.sweep`). No figure
    while no run has finished.
    """
    from tamegrad.train.compare import summarize, write_results
    from tamegrad.train.plot import plot_runs
    from tamegrad.train.sweep import plot_best, plot_sweep, write_best

    out = Path(out_dir)
    table = write_results(out)
    title = f"{name} ({profile})"
    with contextlib.suppress(FileNotFoundError):  # nothing finished yet
        plot_runs(out, out / "curves.png", title=title)
        rows = summarize(out)
        if write_best(out, rows) is not None:  # a learning-rate sweep: best lr per family
            plot_best(out, title, rows)
            plot_sweep(out, title, rows)
    return table


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
    extend_edges: bool = False,
) -> str:
    """Run (or continue) the suite's grid in this process; write and return the results table.

    Finished runs are skipped, so calling it again continues an interrupted grid; several
    workers may share one ``out_dir`` (see :func:`tamegrad.train.compare.run_grid`).
    ``extend_edges`` then grows every sweep whose best lr is at its edge
    (:func:`extend_sweeps`) and runs the new points, until each sweep brackets its best or may
    grow no further (single-process only: extensions are recorded by one writer).
    """
    from tamegrad.train.compare import run_grid

    if extend_edges and num_workers != 1:
        raise ValueError("extend_edges needs num_workers=1 (one process records extensions)")
    while True:
        base, entries, grid_seeds = prepare_suite(
            name, profile, out_dir, seeds=seeds, only=only, overrides=overrides
        )
        run_grid(base, entries, grid_seeds, Path(out_dir), worker=worker,
                 num_workers=num_workers, progress=progress)
        if not extend_edges or not extend_sweeps(name, profile, out_dir):
            break
    return write_suite_outputs(name, profile, out_dir)
