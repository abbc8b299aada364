"""What a suite is: a versioned base config + grid entries, run at named profiles.

Every suite has one profile style: a profile is data (:class:`ProfileSpec`), the changes to the
suite's base config, the seeds and a note; :meth:`Suite.run` turns it into the grid to run.
Bump a suite's ``version`` whenever a change to it would change its numbers, so that old and new
results are never mixed in one folder.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tamegrad.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry


@dataclass(frozen=True)
class SuiteRun:
    """What one (suite, profile) runs."""

    base: TrainConfig
    entries: list[GridEntry]
    seeds: list[int]
    notes: str = ""


@dataclass(frozen=True)
class ProfileSpec:
    """A profile as data: changes to the suite's base config, seeds and a note."""

    changes: dict[str, Any]
    seeds: tuple[int, ...]
    notes: str


@dataclass(frozen=True)
class Suite:
    """A named, versioned experiment: ``base()`` and ``entries()`` at each of ``profiles``."""

    name: str
    version: int
    description: str
    base: Callable[[], TrainConfig]
    entries: Callable[[], list[GridEntry]]
    profiles: dict[str, ProfileSpec] = field(default_factory=dict)
    #: ``report(out_dir, profile) -> markdown``: the suite's own tables (and figures), appended
    #: to ``results.md`` by :func:`~tamegrad.experiments.runner.write_suite_outputs`.
    report: Callable[[Path, str], str] | None = None

    def run(self, profile: str) -> SuiteRun:
        """The grid of ``profile`` (fresh objects on every call: nothing is shared)."""
        if profile not in self.profiles:
            raise ValueError(
                f"Unknown profile {profile!r} for suite {self.name!r}. "
                f"Valid profiles: {', '.join(sorted(self.profiles))}"
            )
        spec = self.profiles[profile]
        changes = copy.deepcopy(spec.changes)  # no dict shared between the configs it builds
        return SuiteRun(replace(self.base(), **changes), self.entries(), list(spec.seeds),
                        spec.notes)


def cifar10_config(**fields: Any) -> TrainConfig:
    """The CIFAR-10 base every suite starts from: the JPEG copy, ResNet-18 width 64, random
    crop + flip, the standard normalisation, evaluation in batches of 500; ``fields`` set the
    rest (optimizer, lr, batch, schedule, epochs, ...) and may override any of these."""
    defaults: dict[str, Any] = {
        "dataset": "cifar10-jpeg", "model": "resnet18", "width": 64, "augment": True,
        "norm_mean": CIFAR10_MEAN, "norm_std": CIFAR10_STD, "eval_batch_size": 500,
    }
    return TrainConfig(**{**defaults, **fields})

