"""The ``wtacrs-shakespeare`` suites: the corpus halves, the grid, the equal-memory batch
(recomputed with the activation meter), and the smoke profile end to end (pre-train, then
fine-tune from its weights)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tamegrad.data import default_data_dir, load_dataset
from tamegrad.experiments import SUITES, run_suite, suite_run
from tamegrad.experiments.wtacrs import (
    ARMS,
    EQUAL_MEMORY_BATCH,
    MODEL_SIZES,
    equal_memory_batch,
    pretrain_folder,
)
from tamegrad.train.grid import entry_config

needs_text = pytest.mark.skipif(
    not (default_data_dir() / "tinyshakespeare.txt").exists(),
    reason="tinyshakespeare.txt not in $TAMEGRAD_DATA")


@needs_text
def test_span_selects_disjoint_parts_with_the_whole_vocabulary() -> None:
    text = (default_data_dir() / "tinyshakespeare.txt").read_text(encoding="utf-8")
    whole = load_dataset("tinyshakespeare", seq_len=64)
    first = load_dataset("tinyshakespeare", seq_len=64, span=(0, 0.5))
    second = load_dataset("tinyshakespeare", seq_len=64, span=[0.5, 1])  # JSON gives lists
    assert first.classes == second.classes == whole.classes
    n, half = len(text), len(text) // 2
    for ds, (a, b) in ((first, (0, half)), (second, (half, n))):
        cut = a + int((b - a) * 0.9)  # the part's first 90% train, last 10% test
        assert ds.train_x.shape[0] == (cut - a - 1) // 64
        assert ds.test_x.shape[0] == (b - cut - 1) // 64
        chars = "".join(ds.classes[i] for i in ds.train_x[0].tolist())
        assert chars == text[a:a + 64]
        chars = "".join(ds.classes[i] for i in ds.test_x[0].tolist())
        assert chars == text[cut:cut + 64]
    for bad in ((0.5, 0.5), (-0.1, 0.5), (0, 1.1), (0.2,), "first", (0, float("nan"))):
        with pytest.raises(ValueError, match="span"):
            load_dataset("tinyshakespeare", seq_len=64, span=bad)


def test_grid_arms_and_stages() -> None:
    for profile in ("smoke", "cpu", "full"):
        pre = suite_run("wtacrs-shakespeare-pretrain", profile)
        ft = suite_run("wtacrs-shakespeare", profile)
        assert [e.label for e in pre.entries] == ["pretrain"] and pre.seeds == [0]
        assert pre.base.estimator is None and pre.base.init_from is None
        assert ft.base.init_from == pretrain_folder(profile)
        assert pretrain_folder(profile).endswith(f"-pretrain-{profile}/pretrain/seed0")
        batch = EQUAL_MEMORY_BATCH[profile]
        assert [e.label for e in ft.entries] == [*ARMS, f"exact equal-memory (batch {batch})"]
        configs = [entry_config(ft.base, e, 0) for e in ft.entries]
        assert [(c.estimator, c.keep_frac) for c in configs] == [*ARMS.values(), (None, None)]
        assert [c.batch_size for c in configs] == [MODEL_SIZES[profile]["batch_size"]] * 5 + [
            batch]
        # same architecture in both stages (init_from requires it); disjoint halves
        for field in ("model", "width", "model_options", "seq_len"):
            assert getattr(pre.base, field) == getattr(ft.base, field)
        a, b = pre.base.dataset_options["span"], ft.base.dataset_options["span"]
        assert a[1] <= b[0]
    assert suite_run("wtacrs-shakespeare", "cpu").seeds == [0, 1, 2]
    assert {"wtacrs-shakespeare", "wtacrs-shakespeare-pretrain"} <= set(SUITES)


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_equal_memory_batch_is_the_meters_answer(profile: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert equal_memory_batch(MODEL_SIZES[profile]) == EQUAL_MEMORY_BATCH[profile]
    finally:
        torch.set_num_threads(threads)


def test_equal_memory_batch_definition() -> None:
    """At the smoke size: exact at the answer fits WTA-CRS 0.3's bytes, one more does not, and
    the answer is smaller than the base batch (WTA-CRS saves memory)."""
    from tamegrad.estimators import ActivationMeter, batch_context, convert
    from tamegrad.models import create_model

    sizes = MODEL_SIZES["smoke"]
    t, base = sizes["seq_len"], sizes["batch_size"]

    def bytes_of(method: str | None, batch: int) -> int:
        torch.manual_seed(0)
        m = create_model("gpt", num_classes=65, input_shape=(t,), width=sizes["width"],
                         **sizes["model_options"])
        if method is not None:
            m = convert(m, method, keep_frac=0.3)
        x = torch.randint(0, 65, (batch, t + 1))
        for _ in range(2):  # the second step uses cached gradient norms
            with ActivationMeter(m) as meter, batch_context(m, torch.arange(batch)):
                loss = torch.nn.functional.cross_entropy(m(x[:, :-1]).reshape(-1, 65),
                                                         x[:, 1:].reshape(-1))
                loss.backward()
        return meter.report().activation_bytes

    budget = bytes_of("wtacrs", base)
    b = EQUAL_MEMORY_BATCH["smoke"]
    assert bytes_of(None, b) <= budget < bytes_of(None, b + 1)
    assert b < base


@needs_text
@pytest.mark.filterwarnings("ignore:WTACRSLinear mode='topk'")
def test_smoke_profile_end_to_end(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.process_time()
        run_suite("wtacrs-shakespeare-pretrain", "smoke", tmp_path / "pre", progress=False)
        pre = tmp_path / "pre" / "pretrain" / "seed0"
        table = run_suite("wtacrs-shakespeare", "smoke", tmp_path / "ft", progress=False,
                          overrides={"init_from": str(pre)})
        assert time.process_time() - start < 30
    finally:
        torch.set_num_threads(threads)
    results = (tmp_path / "ft" / "results.md").read_text()
    assert results.strip() == table.strip()
    assert "## Fine-tuning on the second half" in results
    for label in [*ARMS, f"exact equal-memory (batch {EQUAL_MEMORY_BATCH['smoke']})"]:
        assert f"| {label} | " in results
    assert (tmp_path / "ft" / "curves_step.png").stat().st_size > 10_000
    folder = tmp_path / "ft" / "WTA-CRS_0.3" / "seed0"
    config = json.loads((folder / "config.json").read_text())
    assert config["init_from"] == str(pre) and config["dataset_options"]["span"] == [0.5, 0.52]
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    exact_rows = [json.loads(line) for line in
                  (tmp_path / "ft" / "exact" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "test_bpc" in rows[-1]
    # activation bytes land in the metrics of every arm; WTA-CRS 0.3 keeps fewer than exact
    assert 0 < rows[0]["mem_activation_bytes"] < exact_rows[0]["mem_activation_bytes"]


@needs_text
def test_fine_tune_without_pretrain_fails_clearly(tmp_path: Path) -> None:
    from tamegrad.train.trainer import train

    spec = suite_run("wtacrs-shakespeare", "smoke")
    cfg = entry_config(spec.base, spec.entries[0], 0)
    cfg.init_from = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="run the pre-training first"):
        train(cfg, tmp_path / "run", progress=False)
