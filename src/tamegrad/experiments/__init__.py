"""Named, versioned experiment suites: ``tamegrad reproduce SUITE --profile PROFILE``.

One module per paper: :mod:`.tr` (``tr-cifar10``, ``tr-cifar10-search``) and :mod:`.gssgd`
(``gssgd-cifar10``, ``gssgd-shakespeare``). A suite (:class:`Suite`) is a base
:class:`~tamegrad.train.config.TrainConfig` and grid entries at named profiles
(:class:`ProfileSpec`: config changes, seeds, a note); :func:`run_suite` (:mod:`.runner`) runs
it on the resumable grid runner and writes its tables and figures. Learning-rate sweeps
(:mod:`.sweeps`) are entries with a ``family``.

To add a paper: a module defining its :class:`Suite` objects, listed in
:data:`~tamegrad.experiments.suites.SUITES`.
"""

from __future__ import annotations

from ._suite import ProfileSpec, Suite, SuiteRun
from .runner import extend_sweeps, prepare_suite, run_suite, seed_stage, write_suite_outputs
from .suites import SUITES, available_suites, get_suite, suite_run
from .tr import TR_MEAN_STEP_MULTIPLIER, mean_step_multiplier

__all__ = [
    "SUITES",
    "TR_MEAN_STEP_MULTIPLIER",
    "ProfileSpec",
    "Suite",
    "SuiteRun",
    "available_suites",
    "extend_sweeps",
    "get_suite",
    "mean_step_multiplier",
    "prepare_suite",
    "run_suite",
    "seed_stage",
    "suite_run",
    "write_suite_outputs",
]
