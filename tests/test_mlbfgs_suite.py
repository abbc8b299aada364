"""The ``mlbfgs-cifar10`` suite: its sweeps, and the smoke profile end to end (results.md with
the time-to-target columns, curves against steps and seconds)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from tamegrad.data import default_data_dir
from tamegrad.experiments import SUITES, run_suite, suite_run
from tamegrad.experiments.mlbfgs import (
    BATCHES,
    CENTRES,
    MLBFGS_OPTIONS,
    TARGETS,
)
from tamegrad.experiments.sweeps import SWEEP_FACTORS
from tamegrad.optim import create
from tamegrad.train.grid import entry_config


def test_sweeps_are_family_x_batch_x_three_lrs() -> None:
    assert "mlbfgs-cifar10" in SUITES
    for profile in ("smoke", "cpu", "full"):
        spec = suite_run("mlbfgs-cifar10", profile)
        configs = [entry_config(spec.base, e, 0) for e in spec.entries]
        assert len(spec.entries) == len(CENTRES) * len(BATCHES) * len(SWEEP_FACTORS)
        assert {c.schedule for c in configs} == {"cosine"}
        assert {c.model for c in configs} == {"resnet18"}
        assert set(TARGETS[profile]) == set(BATCHES)
        for batch in BATCHES:
            for family, centre in CENTRES.items():
                points = [(e, c) for e, c in zip(spec.entries, configs)
                          if e.family == family and c.batch_size == batch]
                lrs = sorted(c.lr for _, c in points)
                assert len(lrs) == 3  # factor 3 apart, centred on the (batch-shifted) centre
                assert lrs[1] == pytest.approx(centre * math.sqrt(batch / 128), rel=0.01)
                assert lrs[2] / lrs[1] == pytest.approx(3, rel=0.02)
                assert lrs[1] / lrs[0] == pytest.approx(3, rel=0.02)
                assert len({(e.optimizer, str(e.optimizer_kwargs)) for e, _ in points}) == 1
                for e, _ in points:
                    assert e.label == f"{family} lr={e.label.split('lr=')[1]}"
                    assert e.label.endswith(f" b{batch}")
    cpu = suite_run("mlbfgs-cifar10", "cpu")
    assert (cpu.base.width, cpu.base.train_subset, cpu.seeds) == (16, 10_000, [0])
    mlbfgs = [e for e in cpu.entries if e.optimizer == "mlbfgs"]
    assert all(e.optimizer_kwargs == MLBFGS_OPTIONS for e in mlbfgs)
    # every entry builds its optimizer (names and keywords valid)
    for e in cpu.entries:
        cfg = entry_config(cpu.base, e, 0)
        create(cfg.optimizer, [torch.nn.Parameter(torch.zeros(3))], lr=cfg.lr,
               weight_decay=cfg.weight_decay, **cfg.optimizer_kwargs)


@pytest.mark.usefixtures("one_thread")
def test_smoke_profile_end_to_end(tmp_path: Path) -> None:
    if not (default_data_dir() / "cifar10-jpeg.tar.gz").exists():
        pytest.skip("cifar10-jpeg.tar.gz not in $TAMEGRAD_DATA")
    out = tmp_path / "smoke"
    # four entries over both batch sizes (each run evaluates the whole test set twice, which
    # dominates the smoke's time)
    only = ["SGD lr=0.1 b128", "mL-BFGS lr=0.1 b128", "mL-BFGS lr=0.025 b8",
            "L-BFGS stochastic lr=2.5e-3 b8"]
    start = time.process_time()  # CPU time: other jobs on a busy machine do not count
    table = run_suite("mlbfgs-cifar10", "smoke", out, only=only, progress=False)
    assert time.process_time() - start < 30
    results = (out / "results.md").read_text()
    assert results.strip() == table.strip()
    assert "## Batch 128: time to test accuracy >= 10% (fixed in advance)" in results
    assert "## Batch 8: time to test accuracy >= 10% (fixed in advance)" in results
    for column in ("final test acc (%)", "steps to target", "seconds to target", "samples/s",
                   "speed-up vs SGD lr=0.1 b128"):
        assert column in results
    for label in only:
        assert f"| {label} | 1/1 |" in results  # the generic table: one finished seed
    for name in ("b128_step", "b128_wall_time", "b8_step", "b8_wall_time"):
        assert (out / f"curves_{name}.png").stat().st_size > 10_000
