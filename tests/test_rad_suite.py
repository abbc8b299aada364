"""The ``rad-cifar10`` suite: its grid (five arms x a 3-point lr sweep, equal iterations), the
equal-memory batch, and the smoke profile end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tamegrad import estimators
from tamegrad.experiments import SUITES, run_suite, seed_stage, suite_run
from tamegrad.experiments.rad import (
    ARMS,
    BATCH,
    KEEP_FRAC,
    REDUCED_BATCH,
    _step_fn,
    equal_memory_batch,
)
from tamegrad.models import create_model
from tamegrad.train.grid import entry_config
from tamegrad.train.sweep import best_per_family


def test_entries_are_arm_sweeps_at_equal_iterations() -> None:
    assert "rad-cifar10" in SUITES
    for profile in ("smoke", "cpu", "full"):
        spec = suite_run("rad-cifar10", profile)
        configs = [entry_config(spec.base, e, 0) for e in spec.entries]
        families = [e.family for e in spec.entries]
        assert families == [arm for _ in range(3) for arm in ARMS]  # centre lrs first
        assert [e.lr for e in spec.entries[:len(ARMS)]] == pytest.approx(
            [max(e.lr or 0 for e in spec.entries if e.family == arm) / 3 for arm in ARMS],
            rel=0.01)
        for arm, (batch, _) in ARMS.items():
            mine = [(e, c) for e, c in zip(spec.entries, configs) if e.family == arm]
            lrs = sorted(float(e.lr) for e, _ in mine if e.lr is not None)
            assert len(lrs) == 3 and lrs[1] / lrs[0] == pytest.approx(3, rel=0.01)
            assert lrs[2] / lrs[1] == pytest.approx(3, rel=0.01)
            for e, c in mine:  # only the lr differs within a family
                assert c.batch_size == batch and e.label == f"{arm} lr={e.label.split('=')[1]}"
                assert (c.optimizer, c.model, c.schedule, c.augment) == (
                    "adam", "rad-cnn", "step", False)
                c.validate()
        # equal iterations: every arm runs limit_train_batches steps per epoch
        assert spec.base.limit_train_batches is not None
        steps = {(c.limit_train_batches or 0) * c.epochs for c in configs}
        assert len(steps) == 1
        if spec.base.train_subset is not None:  # every epoch has that many batches
            assert spec.base.train_subset // BATCH >= spec.base.limit_train_batches
        rad = [c for c in configs if c.estimator == "rad"]
        assert {c.estimator_options["variant"] for c in rad} == {"same", "different",
                                                                  "projection"}
        assert all(c.keep_frac == KEEP_FRAC and c.estimator_options["lean"] for c in rad)
        assert {c.estimator for c in configs if c.estimator != "rad"} == {"lean"}
    full = suite_run("rad-cifar10", "full").base
    assert (full.limit_train_batches or 0) * full.epochs == 20_000  # the paper's iterations


def test_equal_memory_batch_is_the_largest_that_fits() -> None:
    got = equal_memory_batch()
    assert got["batch"] == REDUCED_BATCH  # the constant the suite uses is the measured one
    assert got["bytes"] <= got["budget"] < got["next_bytes"]
    # the budget is RAD's bytes at batch 150, measured independently here
    torch.manual_seed(1)
    rad = estimators.convert(create_model("rad-cnn", num_classes=10, input_shape=(3, 32, 32)),
                             "rad", keep_frac=KEEP_FRAC, lean=True)
    assert estimators.measure_activation_bytes(_step_fn(rad, (3, 32, 32), 10), BATCH,
                                               model=rad) == got["budget"]


@pytest.mark.usefixtures("one_thread")  # as each --workers process uses
def test_smoke_profile_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "smoke"  # the smoke profile runs on the built-in 8x8 digits
    start = time.process_time()  # CPU time: other jobs on a busy machine do not count
    table = run_suite("rad-cifar10", "smoke", out, progress=False)
    assert time.process_time() - start < 30
    results = (out / "results.md").read_text()
    assert results.strip() == table.strip()
    assert "## Each arm at its best lr" in results
    for arm in ARMS:
        assert f"| {arm} | {ARMS[arm][0]} |" in results
    assert (out / "best.md").exists() and (out / "curves_chosen_step.png").stat().st_size > 1000
    # measured bytes per step in the metrics; RAD 0.1 keeps ~1/8 of exact's at batch 150
    label = next(e.label for e in suite_run("rad-cifar10", "smoke").entries
                 if e.family == "RAD different")
    rows = [json.loads(line) for line in
            (out / label.replace(" ", "_").replace("=", "-") / "seed0" / "metrics.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["mem_activation_bytes"] > 0
    # stage 2 copies each family's best run
    labels = seed_stage(out, tmp_path / "seeds")
    assert [b["best_label"] for b in best_per_family_rows(out)] == labels
    assert all((tmp_path / "seeds" / lab.replace(" ", "_").replace("=", "-") / "seed0").is_dir()
               for lab in labels)


def best_per_family_rows(out: Path) -> list[dict[str, object]]:
    from tamegrad.train.results import summarize

    return best_per_family(summarize(out))
