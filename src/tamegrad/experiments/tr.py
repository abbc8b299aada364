"""The TR paper's suites (IJCAI 2019, trajectory regularisation at batch size 8).

``tr-cifar10`` (v1)
    The TR claim at batch size 8 on CIFAR-10 (ResNet-18, weight decay 1e-4, step schedule x0.1
    at 50% / x0.01 at 75%), with the paper's four optimizers and the controls the paper lacks:
    lr-matched SGD and Adam (TR's mean inner step is H_10/10 = 0.293 of its nominal lr), SGD
    with gradient accumulation to an effective batch of 128 at batch-8 memory, and
    Lookahead(SGD).

``tr-cifar10-search`` (v1)
    The search for a TR setting that beats the best control of ``tr-cifar10``: five TRSGD
    settings (lambda_w, S, inner decay on/off) on the same base config, tuned on seed 0; the
    best one is then run on the held-out seeds 1 and 2 (``--seeds 1 2 --only LABEL``).

The demo (``tamegrad demo``) runs :func:`demo_entries`: the paper's four with the two
lr-matched controls.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry

from ._suite import ProfileSpec, Suite, cifar10_config


def mean_step_multiplier(inner_steps: int) -> float:
    """Mean step-size multiplier of a TR cycle of ``inner_steps`` with inner decay: H_S / S."""
    return sum(1.0 / (s + 1) for s in range(inner_steps)) / inner_steps


#: Mean step-size multiplier of a TR cycle with S = 10 and inner decay: H_10 / 10.
TR_MEAN_STEP_MULTIPLIER = mean_step_multiplier(10)

_SGD_LR, _ADAM_LR = 0.1, 1e-3


def paper_entries() -> list[GridEntry]:
    """The paper's four: SGD and TRSGD at lr 0.1 (momentum 0.9, lambda_w 0.01), Adam and TRAdam
    at lr 1e-3 (lambda_w 1e-4), S = 10."""
    sgd = {"momentum": 0.9}
    return [
        GridEntry("SGD", "sgd", _SGD_LR, dict(sgd)),
        GridEntry("TRSGD", "trsgd", _SGD_LR, {**sgd, "lambda_w": 0.01, "inner_steps": 10}),
        GridEntry("Adam", "adam", _ADAM_LR),
        GridEntry("TRAdam", "tradam", _ADAM_LR, {"lambda_w": 1e-4, "inner_steps": 10}),
    ]


def lr_matched_entries() -> list[GridEntry]:
    """SGD and Adam at TR's mean effective step (nominal lr x H_10/10): the step-size control."""
    matched = TR_MEAN_STEP_MULTIPLIER
    return [
        GridEntry(f"SGD lr-matched ({_SGD_LR * matched:.3g})", "sgd", _SGD_LR * matched,
                  {"momentum": 0.9}),
        GridEntry(f"Adam lr-matched ({_ADAM_LR * matched:.3g})", "adam", _ADAM_LR * matched),
    ]


def demo_entries() -> list[GridEntry]:
    """The demo's six: each TR optimizer between its base optimizer and its lr-matched control."""
    sgd, trsgd, adam, tradam = paper_entries()
    sgd_matched, adam_matched = lr_matched_entries()
    return [sgd, sgd_matched, trsgd, adam, adam_matched, tradam]


def tr_cifar10_entries() -> list[GridEntry]:
    """``tr-cifar10``'s eight: the paper's four, the lr-matched controls, accumulation and
    Lookahead."""
    sgd = {"momentum": 0.9}
    return [
        *paper_entries(),
        *lr_matched_entries(),
        GridEntry("SGD accum x16 (eff. batch 128)", "sgd", _SGD_LR, dict(sgd),
                  overrides={"grad_accum": 16}),
        GridEntry("Lookahead(SGD)", "lookahead", _SGD_LR, {**sgd, "k": 5, "alpha": 0.5}),
    ]


def tr_search_entries() -> list[GridEntry]:
    """The TRSGD settings tried against the best ``tr-cifar10`` control (lr-matched SGD).

    One axis at a time around the paper's setting (lr 0.1, lambda_w 0.01, S 10, inner decay on,
    which ``tr-cifar10`` already runs): the pull strength (lambda_w 1e-3, 3e-2), the cycle
    length (S 5, 20: mean inner step 0.457 and 0.180 of lr), and inner decay off at the
    lr-matched lr with the paper's lambda_w / lr ratio (TR's pull without its step-size cycle).
    """
    sgd = {"momentum": 0.9}
    matched = _SGD_LR * TR_MEAN_STEP_MULTIPLIER  # the lr of tr-cifar10's "SGD lr-matched"

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


def tr_cifar10_base(**changes: Any) -> TrainConfig:
    """The paper's CIFAR-10 setting: ResNet-18 (width 64), batch 8, 200 epochs, step schedule."""
    base = cifar10_config(
        batch_size=8,
        weight_decay=1e-4,
        schedule="step",
        epochs=200,
    )
    return replace(base, **changes)


_SMOKE = ProfileSpec(
    {"width": 4, "epochs": 2, "train_subset": 320, "limit_train_batches": 20, "device": "cpu"},
    (0,),
    "keeps the suite working (CI): 2 x 20 steps per configuration; numbers are noise",
)
_CPU_CHANGES = {"width": 16, "epochs": 10, "train_subset": 10_000, "device": "cpu"}

TR_CIFAR10 = Suite(
    "tr-cifar10",
    1,
    "TR vs SGD/Adam at batch 8 on CIFAR-10, with lr-matched, accumulation and Lookahead "
    "controls",
    tr_cifar10_base,
    tr_cifar10_entries,
    {
        "smoke": _SMOKE,
        "cpu": ProfileSpec(
            _CPU_CHANGES, (0, 1, 2),
            "ResNet-18 width 16, 10,000 training images (class-balanced), full test set",
        ),
        "full": ProfileSpec(
            {}, (0, 1, 2), "the paper's setting: width 64, 50,000 images, 200 epochs (GPU)"
        ),
        "full-short": ProfileSpec(
            {"epochs": 15, "train_subset": 20_000}, (0,),
            "a shortened full profile that fits about an hour of one GPU",
        ),
    },
)

TR_CIFAR10_SEARCH = Suite(
    "tr-cifar10-search",
    1,
    "TRSGD settings (lambda_w, S, inner decay) searched on seed 0 against the best "
    "tr-cifar10 control, the selected one evaluated on held-out seeds",
    tr_cifar10_base,
    tr_search_entries,
    {
        "smoke": _SMOKE,
        "cpu": ProfileSpec(
            _CPU_CHANGES, (0,),
            "the tr-cifar10 cpu base config; tuning seed 0 (held-out seeds 1 and 2 are run "
            "for the selected entry only, with --seeds 1 2 --only LABEL)",
        ),
    },
)
