"""The named experiment suites (``tamegrad reproduce``): definitions and the smoke profile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tamegrad.data import default_data_dir
from tamegrad.experiments import (
    TR_MEAN_STEP_MULTIPLIER,
    available_suites,
    run_suite,
    suite_run,
)


def test_tr_cifar10_profiles_follow_the_issue():
    cpu = suite_run("tr-cifar10", "cpu")
    assert (cpu.base.model, cpu.base.width, cpu.base.batch_size) == ("resnet18", 16, 8)
    assert (cpu.base.train_subset, cpu.base.epochs, cpu.base.schedule) == (10_000, 10, "step")
    assert cpu.base.weight_decay == 1e-4 and cpu.seeds == [0, 1, 2]
    full = suite_run("tr-cifar10", "full")
    assert (full.base.width, full.base.epochs, full.base.train_subset) == (64, 200, None)
    by_label = {e.label: e for e in cpu.entries}
    assert by_label["TRSGD"].optimizer_kwargs["lambda_w"] == 0.01
    assert by_label["TRAdam"].optimizer_kwargs["lambda_w"] == 1e-4
    matched = [e for e in cpu.entries if "lr-matched" in e.label]
    assert {e.optimizer for e in matched} == {"sgd", "adam"}
    assert math.isclose(TR_MEAN_STEP_MULTIPLIER, sum(1 / k for k in range(1, 11)) / 10)
    sgd_matched = next(e for e in matched if e.optimizer == "sgd")
    assert sgd_matched.lr == pytest.approx(0.1 * 0.2929, rel=1e-3)
    accum = next(e for e in cpu.entries if "accum" in e.label)
    assert accum.overrides["grad_accum"] * cpu.base.batch_size == 128
    assert any(e.optimizer == "lookahead" for e in cpu.entries)


def test_tr_search_varies_one_axis_at_a_time_on_the_cpu_base():
    search = suite_run("tr-cifar10-search", "cpu")
    main = suite_run("tr-cifar10", "cpu")
    assert search.base == main.base and search.seeds == [0]
    paper = {"lr": 0.1, "lambda_w": 0.01, "inner_steps": 10, "inner_decay": True}
    matched_lr = next(e.lr for e in main.entries if e.label.startswith("SGD lr-matched"))
    for entry in search.entries:
        assert entry.optimizer == "trsgd" and entry.optimizer_kwargs["momentum"] == 0.9
        setting = {"lr": entry.lr, "inner_decay": True, **entry.optimizer_kwargs}
        changed = {k for k, v in paper.items() if setting[k] != v}
        if setting["inner_decay"]:
            assert len(changed) == 1, entry.label  # one axis at a time
        else:  # TR's pull without the step-size cycle, at the lr-matched control's lr
            assert setting["lr"] == matched_lr
            assert setting["lambda_w"] == pytest.approx(0.1 * matched_lr)
    labels = [e.label for e in search.entries]
    assert len(set(labels)) == len(labels)
    # every label selects exactly itself with --only (prefix match)
    assert all(sum(other.startswith(label) for other in labels) == 1 for label in labels)


def test_unknown_suite_and_profile_name_the_valid_ones():
    with pytest.raises(ValueError, match="tr-cifar10"):
        suite_run("nope", "cpu")
    with pytest.raises(ValueError, match="smoke"):
        suite_run("tr-cifar10", "huge")
    assert "tr-cifar10" in available_suites()


@pytest.mark.slow
def test_smoke_profile_runs_end_to_end(tmp_path: Path):
    if not (default_data_dir() / "cifar10-jpeg.tar.gz").exists():
        pytest.skip("cifar10-jpeg.tar.gz not in $TAMEGRAD_DATA")
    out = tmp_path / "smoke"
    table = run_suite("tr-cifar10", "smoke", out, only=["SGD", "TRSGD", "SGD accum"])
    for label in ("SGD", "TRSGD", "SGD accum x16"):
        assert label in table
    assert (out / "results.md").exists() and (out / "curves.png").stat().st_size > 10_000
    meta = json.loads((out / "suite.json").read_text())
    assert (meta["suite"], meta["profile"]) == ("tr-cifar10", "smoke")
    # a second call skips the finished runs and rebuilds the same table
    assert run_suite("tr-cifar10", "smoke", out, only=["SGD", "TRSGD", "SGD accum"]) == table
    with pytest.raises(ValueError, match="profile smoke"):
        run_suite("tr-cifar10", "cpu", out)
