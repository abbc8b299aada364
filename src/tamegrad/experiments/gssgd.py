"""The Generalized SignSGD paper's suites (Crawshaw, Liu, Orabona, Zhang, Zhuang 2022).

``gssgd-cifar10`` (v1)
    The paper's CIFAR-10 comparison (constant lr, weight decay 1e-4) with ResNet-18 at the
    paper's batch 128 and at batch 8: GSSGD, Adam, SGD (Nesterov 0.9), clipped SGD, clipped SGD
    with momentum and normalised SGD, each with a 3-point lr sweep centred on the paper's tuned
    value (shifted by sqrt(8/128) = 1/4 at batch 8).

``gssgd-shakespeare`` (v1)
    The same six optimizers on a 2-layer character LSTM on Tiny Shakespeare (test bits per
    character), batch 64 and 8, constant lr, sweeps centred on the paper's Penn Treebank values.

See docs/GSSGD_EXPERIMENTS.md for the choices behind the two suites.
"""

from __future__ import annotations

from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry

from ._suite import ProfileSpec, Suite, cifar10_config
from .sweeps import OptimizerFamily, sweep_entries

#: Per-channel std of the Generalized SignSGD authors' CIFAR-10 loader (the true std of the
#: training images; their mean is :data:`~tamegrad.data.cifar.CIFAR10_MEAN`).
GSSGD_CIFAR10_STD = (0.2470, 0.2435, 0.2616)

#: Gradient-norm threshold of the "clipped momentum" entries (the trainer's ``clip_grad_norm``,
#: applied to the raw gradient before SGD's momentum), as in the paper's CIFAR-10 command.
CLIPPED_MOMENTUM_CLIP = 0.1


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


# ----------------------------------------------------------------------------- CIFAR-10

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


def gssgd_cifar10_entries() -> list[GridEntry]:
    batches = GSSGD_CIFAR10_BATCHES
    return sweep_entries(gssgd_cifar10_families(), batches, reference_batch=batches[0])


def gssgd_cifar10_base() -> TrainConfig:
    return cifar10_config(
        batch_size=GSSGD_CIFAR10_BATCHES[0],  # every entry sets its own batch size
        weight_decay=1e-4,
        schedule="constant",
        epochs=164,
        norm_std=GSSGD_CIFAR10_STD,
    )


GSSGD_CIFAR10 = Suite(
    "gssgd-cifar10",
    1,
    "Generalized SignSGD vs Adam, SGD, clipped SGD (+momentum), normalised SGD on CIFAR-10 "
    "at batch 128 and 8, constant lr, 3-point lr sweeps",
    gssgd_cifar10_base,
    gssgd_cifar10_entries,
    {
        "smoke": ProfileSpec(
            {"width": 4, "epochs": 2, "train_subset": 256, "limit_train_batches": 4,
             "device": "cpu"},
            (0,),
            "keeps the suite working (CI): 2 x (2 or 4) steps per configuration; numbers are "
            "noise",
        ),
        "cpu": ProfileSpec(
            {"width": 16, "epochs": 5, "train_subset": 10_000, "device": "cpu"},
            (0,),
            "ResNet-18 width 16, 10,000 training images (class-balanced), 5 epochs, full test "
            "set, one seed per sweep point: about 2.5 h on 2 cores with --workers 2",
        ),
        "full": ProfileSpec(
            {},
            (0, 1, 2),
            "the paper's protocol with ResNet-18 (width 64): 50,000 images, 164 epochs, "
            "constant lr (GPU)",
        ),
    },
)


# ----------------------------------------------------------------------------- Shakespeare

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


def gssgd_shakespeare_entries() -> list[GridEntry]:
    batches = GSSGD_SHAKESPEARE_BATCHES
    return sweep_entries(gssgd_shakespeare_families(), batches, reference_batch=batches[0])


def gssgd_shakespeare_base() -> TrainConfig:
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


GSSGD_SHAKESPEARE = Suite(
    "gssgd-shakespeare",
    1,
    "the same six optimizers on a 2-layer char-LSTM on Tiny Shakespeare (test bits per "
    "character) at batch 64 and 8, constant lr, 3-point lr sweeps",
    gssgd_shakespeare_base,
    gssgd_shakespeare_entries,
    {
        "smoke": ProfileSpec(
            {"width": 32, "model_options": {"num_layers": 2, "dropout": 0.0}, "seq_len": 32,
             "epochs": 2, "train_subset": 256, "limit_train_batches": 4, "device": "cpu"},
            (0,),
            "keeps the suite working (CI): hidden 32, 2 x 4 steps per configuration; numbers "
            "are noise",
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
    },
)
