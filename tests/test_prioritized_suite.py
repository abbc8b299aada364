"""The ``prioritized-cifar10`` suite: its grid, and the smoke profile end to end (results.md
with the time-to-target columns, curves against epochs and seconds)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from tamegrad.data import default_data_dir
from tamegrad.experiments import SUITES, run_suite, suite_run
from tamegrad.experiments.prioritized import ARMS, LR, LR_SWEEP_CENTRE, MODELS, TARGETS
from tamegrad.train.grid import entry_config


def test_grid_is_models_times_arms_at_equal_compute() -> None:
    for profile in ("smoke", "cpu", "full"):
        spec = suite_run("prioritized-cifar10", profile)
        assert [e.label for e in spec.entries] == [f"{m} {a}" for m in MODELS for a in ARMS]
        configs = [entry_config(spec.base, e, 0) for e in spec.entries]
        # equal compute: every arm of a model runs the same epochs, batch, lr and schedule
        for model in MODELS:
            mine = [c for c, e in zip(configs, spec.entries) if e.label.startswith(model)]
            assert {(c.epochs, c.batch_size, c.lr, c.schedule, c.model) for c in mine} == {
                (spec.base.epochs, spec.base.batch_size, LR[model], spec.base.schedule,
                 MODELS[model]["model"])}
            assert [c.sampler for c in mine] == ["uniform", "priority", "priority", "infobatch"]
            assert [c.sampler_options.get("unbiased", True) for c in mine[1:3]] == [True, False]
        assert set(TARGETS[profile]) == set(MODELS)
    assert suite_run("prioritized-cifar10", "cpu").seeds == [0, 1, 2]
    assert suite_run("prioritized-cifar10", "cpu").base.train_subset == 10_000
    sweep = suite_run("prioritized-cifar10-lr", "cpu")
    assert {c.sampler for c in (entry_config(sweep.base, e, 0) for e in sweep.entries)} == {
        "uniform"}
    for lr in LR.values():  # a sweep point or an extension (x3 steps, 2 beyond each edge)
        steps = math.log(lr / LR_SWEEP_CENTRE) / math.log(3)
        assert abs(steps - round(steps)) < 0.01 and abs(steps) <= 3
    assert "prioritized-cifar10" in SUITES and "prioritized-cifar10-lr" in SUITES


@pytest.mark.usefixtures("one_thread")  # as each --workers process uses
def test_smoke_profile_end_to_end(tmp_path: Path) -> None:
    if not (default_data_dir() / "cifar10-jpeg.tar.gz").exists():
        pytest.skip("cifar10-jpeg.tar.gz not in $TAMEGRAD_DATA")
    out = tmp_path / "smoke"
    start = time.process_time()  # CPU time: other jobs on a busy machine do not count
    table = run_suite("prioritized-cifar10", "smoke", out, progress=False)
    assert time.process_time() - start < 30
    results = (out / "results.md").read_text()
    assert results.strip() == table.strip()
    for model in MODELS:
        assert f"## {model}: time to test accuracy >= 10%" in results
        for arm in ARMS:
            assert f"| {model} {arm} | 1/1 |" in results  # the generic table
        for name in ("epoch", "wall_time"):
            assert (out / f"curves_{model.lower()}_{name}.png").stat().st_size > 10_000
    for column in ("epochs to target", "steps to target", "seconds to target", "samples/s",
                   "speed-up vs CNN uniform", "% of wall time", "load-free speed-up"):
        assert column in results
    assert "| CNN uniform | 0 | 0 | 1.00x |" in results
    rows = [json.loads(line) for line in
            (out / "CNN_priority" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[-1]["sampler_steps"] == 2
    assert rows[-1]["wall_time"] > rows[0]["wall_time"] > 0


def test_scaling_script_runs_the_suite_setting() -> None:
    """scripts/prioritized_scaling.py trains exactly the suite's cpu config (per-rank batch)."""
    import importlib.util

    from tamegrad.cli import build_parser
    from tamegrad.cli.options import build_config, given_fields

    path = Path(__file__).resolve().parents[1] / "scripts" / "prioritized_scaling.py"
    spec = importlib.util.spec_from_file_location("prioritized_scaling", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    suite = suite_run("prioritized-cifar10", "cpu")
    for model in MODELS:
        for arm in ("priority", "InfoBatch"):
            argv = script._train_args(model, arm, 3, 64, 1, Path("unused"))
            config = build_config(given_fields(build_parser().parse_args(argv)))
            entry = next(e for e in suite.entries if e.label == f"{model} {arm}")
            expected = entry_config(suite.base, entry, 1)
            expected.epochs, expected.batch_size = 3, 64
            assert config.resume_differences(expected) == []
