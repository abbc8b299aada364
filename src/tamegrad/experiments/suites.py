"""The suite registry: name -> :class:`~tamegrad.experiments._suite.Suite`."""

from __future__ import annotations

from ._suite import Suite, SuiteRun
from .gssgd import GSSGD_CIFAR10, GSSGD_SHAKESPEARE
from .mlbfgs import MLBFGS_CIFAR10
from .prioritized import PRIORITIZED_CIFAR10, PRIORITIZED_CIFAR10_LR
from .rad import RAD_CIFAR10
from .tr import TR_CIFAR10, TR_CIFAR10_SEARCH
from .wtacrs import WTACRS_SHAKESPEARE, WTACRS_SHAKESPEARE_PRETRAIN

SUITES: dict[str, Suite] = {
    s.name: s for s in (TR_CIFAR10, TR_CIFAR10_SEARCH, GSSGD_CIFAR10, GSSGD_SHAKESPEARE,
                        PRIORITIZED_CIFAR10, PRIORITIZED_CIFAR10_LR, MLBFGS_CIFAR10)
}
SUITES.update({s.name: s for s in (WTACRS_SHAKESPEARE_PRETRAIN, WTACRS_SHAKESPEARE)})
SUITES[RAD_CIFAR10.name] = RAD_CIFAR10


def available_suites() -> list[str]:
    """Names of the suites, sorted."""
    return sorted(SUITES)


def get_suite(name: str) -> Suite:
    """The suite called ``name``; ``ValueError`` naming the valid ones otherwise."""
    if name not in SUITES:
        raise ValueError(f"Unknown suite {name!r}. Valid suites: {', '.join(available_suites())}")
    return SUITES[name]


def suite_run(name: str, profile: str) -> SuiteRun:
    """The grid of ``name`` at ``profile``; clear errors for unknown names."""
    return get_suite(name).run(profile)
