"""Grid runner: skipping, resuming, claims shared by workers, result tables."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tamegrad.train import claims
from tamegrad.train.claims import try_claim
from tamegrad.train.compare import run_grid
from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import (
    GridEntry,
    entry_config,
    load_grid,
    read_grid,
    run_dir_for,
    slugify,
    write_grid,
)
from tamegrad.train.results import summarize, write_results

ENTRIES = [
    GridEntry("SGD", "sgd", 0.1, {"momentum": 0.9}),
    GridEntry("TR SGD", "trsgd", 0.1, {"lambda_w": 0.01}, {"batch_size": 4}),
]


class FakeTrain:
    """Stands in for ``train()``: records calls and writes the files a finished run has."""

    def __init__(self, delay: float = 0.0, fail_labels: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, int, bool]] = []
        self.delay = delay
        self.fail_labels = fail_labels
        self.lock = threading.Lock()

    def __call__(self, config: TrainConfig, run_dir: Path, *, resume: bool = False,
                 progress: bool | None = None) -> dict[str, Any]:
        run_dir = Path(run_dir)
        with self.lock:
            self.calls.append((run_dir.parent.name, config.seed, resume))
        time.sleep(self.delay)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
        if config.optimizer in self.fail_labels:
            summary = {"status": "failed", "error": "loss is NaN"}
            (run_dir / "summary.json").write_text(json.dumps(summary))
            raise FloatingPointError("loss is NaN")
        acc = 0.5 + 0.1 * config.seed
        with open(run_dir / "metrics.jsonl", "w") as fh:
            for epoch in (1, 2):
                fh.write(json.dumps({"epoch": epoch, "step": 10 * epoch, "lr": config.lr,
                                     "train_loss": 1.0 / epoch, "train_acc": acc,
                                     "test_loss": 1.2 / epoch, "test_acc": acc,
                                     "epoch_time": 0.1, "wall_time": 0.2 * epoch}) + "\n")
        summary = {"status": "completed", "final_test_acc": acc, "best_test_acc": acc + 0.01,
                   "final_train_loss": 0.5, "wall_time": 1.0 + config.seed,
                   "epochs": config.epochs}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return summary


@pytest.fixture
def fake_train() -> FakeTrain:
    return FakeTrain()


def test_slugify() -> None:
    assert slugify("sgd:lr=0.1,momentum=0.9") == "sgd_lr-0.1_momentum-0.9"
    assert slugify("TR SGD") == "TR_SGD"
    assert slugify("///") == "run"


def test_entry_config_applies_overrides() -> None:
    base = TrainConfig(dataset="synthetic", lr=0.5, batch_size=8)
    cfg = entry_config(base, ENTRIES[1], seed=3)
    assert (cfg.optimizer, cfg.lr, cfg.seed, cfg.batch_size) == ("trsgd", 0.1, 3, 4)
    assert cfg.optimizer_kwargs == {"lambda_w": 0.01}
    assert entry_config(base, GridEntry("x", "adam"), 0).lr == 0.5  # lr=None keeps base lr
    with pytest.raises(ValueError, match="unknown config override"):
        entry_config(base, GridEntry("x", "sgd", overrides={"bogus": 1}), 0)


def test_grid_file_roundtrip(tmp_path: Path) -> None:
    base = TrainConfig(dataset="synthetic", epochs=2)
    entries = [GridEntry("A", "adam", 1e-3, {"betas": (0.8, 0.9)})]
    write_grid(tmp_path, base, entries, [0, 1])
    base2, entries2, seeds2 = load_grid(tmp_path)
    assert base2 == base and entries2 == entries and seeds2 == [0, 1]
    assert isinstance(entries2[0].optimizer_kwargs["betas"], tuple)


def test_run_grid_skips_completed_and_resumes(tmp_path: Path, fake_train: FakeTrain) -> None:
    base = TrainConfig(dataset="synthetic", epochs=2)
    records = run_grid(base, ENTRIES, [0, 1], tmp_path, train_fn=fake_train)
    assert [r["action"] for r in records] == ["ran"] * 4
    assert len(fake_train.calls) == 4
    assert (tmp_path / "grid.json").is_file()
    summary_file = run_dir_for(tmp_path, "SGD", 0) / "summary.json"
    mtime = summary_file.stat().st_mtime_ns

    # A run left "running" with a checkpoint is resumed; one without a summary restarts.
    interrupted = run_dir_for(tmp_path, "TR SGD", 1)
    (interrupted / "summary.json").write_text(json.dumps({"status": "running"}))
    (interrupted / "checkpoints").mkdir()
    (interrupted / "checkpoints" / "last.pt").write_bytes(b"x")
    (run_dir_for(tmp_path, "SGD", 1) / "summary.json").unlink()

    fake_train.calls.clear()
    records = run_grid(base, ENTRIES, [0, 1], tmp_path, train_fn=fake_train)
    actions = {(r["label"], r["seed"]): r["action"] for r in records}
    assert actions == {("SGD", 0): "skipped", ("SGD", 1): "ran",
                       ("TR SGD", 0): "skipped", ("TR SGD", 1): "resumed"}
    assert sorted(fake_train.calls) == [("SGD", 1, True), ("TR_SGD", 1, True)]
    assert summary_file.stat().st_mtime_ns == mtime
    assert not list(tmp_path.rglob(".claim"))


def test_failed_run_does_not_stop_grid(tmp_path: Path) -> None:
    fake_train = FakeTrain(fail_labels=("sgd",))
    base = TrainConfig(dataset="synthetic")
    records = run_grid(base, ENTRIES, [0], tmp_path, train_fn=fake_train)
    assert [r["action"] for r in records] == ["failed", "ran"]
    # Failed runs are not retried by default, but are with retry_failed=True.
    records = run_grid(base, ENTRIES, [0], tmp_path, train_fn=fake_train)
    assert [r["action"] for r in records] == ["skipped"] * 2
    records = run_grid(base, ENTRIES, [0], tmp_path, retry_failed=True, train_fn=fake_train)
    assert [r["action"] for r in records] == ["failed", "skipped"]
    text = write_results(tmp_path)
    assert "SGD, seed 0: failed: loss is NaN" in text


def test_two_workers_run_each_cell_once(tmp_path: Path) -> None:
    fake_train = FakeTrain(delay=0.05)
    base = TrainConfig(dataset="synthetic")
    seeds = [0, 1, 2]
    results: dict[int, list[dict[str, Any]]] = {}

    def work(k: int) -> None:
        results[k] = run_grid(base, ENTRIES, seeds, tmp_path, worker=k, num_workers=2,
                              train_fn=fake_train)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cells = [(label, seed) for label, seed, _ in fake_train.calls]
    assert sorted(cells) == sorted({(slugify(e.label), s) for e in ENTRIES for s in seeds})
    assert len(cells) == len(set(cells)) == 6
    ran = {k: sum(r["action"] == "ran" for r in results[k]) for k in (0, 1)}
    assert ran[0] + ran[1] == 6 and ran[0] >= 1 and ran[1] >= 1


def test_claims_live_and_stale(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "seed0"
    run_dir.mkdir(parents=True)
    claim = run_dir / claims.CLAIM_FILE
    # A live foreign process holds the claim -> refused.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        claim.write_text(json.dumps({"pid": sleeper.pid, "host": claims._HOST}))
        assert not try_claim(run_dir, tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    # The same claim is stale once the process is gone -> taken over.
    assert try_claim(run_dir, tmp_path)
    assert json.loads(claim.read_text())["pid"] != sleeper.pid
    claims.release_claim(run_dir)
    assert not claim.exists()


def test_summarize_mean_std_and_missing(tmp_path: Path, fake_train: FakeTrain) -> None:
    base = TrainConfig(dataset="synthetic")
    run_grid(base, ENTRIES[:1], [0, 1, 2], tmp_path, train_fn=fake_train)
    # Seed 3 added to the grid but never run, seed 2 left half-way.
    write_grid(tmp_path, base, ENTRIES, [0, 1, 2, 3])
    (run_dir_for(tmp_path, "SGD", 2) / "summary.json").write_text('{"status": "running"}')
    rows = summarize(tmp_path)
    sgd, tr = rows
    assert sgd["n"] == 2 and sgd["completed_seeds"] == [0, 1]
    assert sgd["final_test_acc_mean"] == pytest.approx(0.55)
    assert sgd["final_test_acc_std"] == pytest.approx(0.0707106781)  # sample std
    assert sgd["wall_time_mean"] == pytest.approx(1.5)
    assert [m["seed"] for m in sgd["missing"]] == [2, 3]
    assert tr["n"] == 0 and tr["final_test_acc_mean"] is None
    text = write_results(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert text == md
    assert "| SGD | 2/4 | 55.00 ± 7.07 |" in md
    assert "SGD, seed 2: unfinished" in md and "TR SGD, seed 0: not started" in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in data["rows"]] == ["SGD", "TR SGD"]


def test_duplicate_slugs_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same folder"):
        run_grid(TrainConfig(), [GridEntry("a b", "sgd"), GridEntry("a_b", "sgd")], [0],
                 tmp_path, train_fn=fake_train)


def test_a_folder_run_in_parts_keeps_every_part_in_its_grid(
    tmp_path: Path, fake_train: FakeTrain
) -> None:
    # e.g. a seed stage run family by family, or two processes with different --only subsets:
    # the last run must not drop the earlier parts from grid.json and so from the tables
    base = TrainConfig(dataset="synthetic", epochs=1)
    run_grid(base, ENTRIES[:1], [0, 1], tmp_path, train_fn=fake_train)
    run_grid(base, ENTRIES[1:], [0], tmp_path, train_fn=fake_train)
    _, entries, seeds = load_grid(tmp_path)
    assert [e.label for e in entries] == ["SGD", "TR SGD"] and seeds == [0, 1]
    rows = {r["label"]: r for r in summarize(tmp_path)}
    assert rows["SGD"]["n"] == 2 and rows["TR SGD"]["n"] == 1
    # rerunning a part changes nothing; a new definition of a label replaces the old one
    run_grid(base, ENTRIES[:1], [0, 1], tmp_path, train_fn=fake_train)
    assert [e.label for e in load_grid(tmp_path)[1]] == ["SGD", "TR SGD"]


def test_tuples_in_option_dicts_match_their_json_round_trip(
    tmp_path: Path, fake_train: FakeTrain
) -> None:
    # A suite builds options with tuples; config.json stores lists. Rerunning the same suite
    # must skip its finished run, not call it a different configuration (it once did).
    base = TrainConfig(dataset="synthetic", epochs=1, dataset_options={"span": (0.0, 0.5)})
    run_grid(base, ENTRIES[:1], [0], tmp_path, train_fn=fake_train)
    records = run_grid(base, ENTRIES[:1], [0], tmp_path, train_fn=fake_train)
    assert [r["action"] for r in records] == ["skipped"]
    stored = TrainConfig.from_dict(json.loads(json.dumps(base.to_dict())))
    assert base.resume_differences(stored) == []


def test_changed_config_is_refused_or_extended(tmp_path: Path, fake_train: FakeTrain) -> None:
    base = TrainConfig(dataset="synthetic", epochs=2, schedule="cosine")
    run_grid(base, ENTRIES[:1], [0], tmp_path, train_fn=fake_train)
    grid_before = (tmp_path / "grid.json").read_text()
    with pytest.raises(ValueError, match=r"different configuration.*epochs"):
        run_grid(TrainConfig(dataset="synthetic", epochs=3, schedule="cosine"), ENTRIES[:1],
                 [0], tmp_path, train_fn=fake_train)
    assert (tmp_path / "grid.json").read_text() == grid_before
    # Only where-it-runs fields changed: fine, nothing to redo.
    moved = TrainConfig(dataset="synthetic", epochs=2, schedule="cosine", eval_batch_size=64)
    records = run_grid(moved, ENTRIES[:1], [0], tmp_path, train_fn=fake_train)
    assert [r["action"] for r in records] == ["skipped"]

    # With the constant schedule more epochs extend the completed runs.
    out = tmp_path / "constant"
    run_grid(TrainConfig(dataset="synthetic", epochs=2), ENTRIES[:1], [0], out,
             train_fn=fake_train)
    records = run_grid(TrainConfig(dataset="synthetic", epochs=4), ENTRIES[:1], [0], out,
                       train_fn=fake_train)
    assert [r["action"] for r in records] == ["ran"]
    assert fake_train.calls[-1] == ("SGD", 0, True)


class InterruptedTrain(FakeTrain):
    """Ctrl-C in the middle of the first run: the summary says what the trainer wrote."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__()
        self.summary = summary
        self.interrupt = True

    def __call__(self, config: TrainConfig, run_dir: Path, *, resume: bool = False,
                 progress: bool | None = None) -> dict[str, Any]:
        if not self.interrupt:
            return super().__call__(config, run_dir, resume=resume, progress=progress)
        self.interrupt = False
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
        (run_dir / "summary.json").write_text(json.dumps(self.summary))
        raise KeyboardInterrupt


@pytest.mark.parametrize("summary", [
    {"status": "interrupted", "error": "KeyboardInterrupt"},  # the trainer's record
    {"status": "failed", "error": "KeyboardInterrupt: "},  # how older trainers recorded it
])
def test_interrupted_cell_is_resumed_not_failed(tmp_path: Path, summary: dict[str, Any]) -> None:
    """Issue 16.1: Ctrl-C in a grid must not turn the running cell into a failed one."""
    fake = InterruptedTrain(summary)
    base = TrainConfig(dataset="synthetic")
    with pytest.raises(KeyboardInterrupt):
        run_grid(base, ENTRIES, [0], tmp_path, train_fn=fake)
    cell = run_dir_for(tmp_path, "SGD", 0)
    assert json.loads((cell / "summary.json").read_text())["status"] == "interrupted"
    assert not (cell / ".claim").exists()
    rows = summarize(tmp_path)
    assert rows[0]["missing"][0]["status"] == "interrupted"
    assert "resumes on the next run" in write_results(tmp_path)
    # The next run of the grid trains it (without --retry-failed) and the table is complete.
    records = run_grid(base, ENTRIES, [0], tmp_path, train_fn=fake)
    assert [r["action"] for r in records] == ["ran", "ran"]
    assert "Missing runs" not in write_results(tmp_path)


def test_grid_file_records_threads_and_reads_version_1(tmp_path: Path) -> None:
    base = TrainConfig(dataset="synthetic")
    entries = [GridEntry("A lr=0.1 b8", "sgd", 0.1, family="A")]
    write_grid(tmp_path, base, entries, [0], threads=3)
    grid = read_grid(tmp_path)
    assert grid.threads == 3 and grid.entries == entries
    write_grid(tmp_path, base, entries, [0, 1])  # threads=None keeps the recorded count
    assert read_grid(tmp_path).threads == 3
    # run_grid records the thread count it is given
    run_grid(base, ENTRIES[:1], [0], tmp_path / "g", threads=2, train_fn=FakeTrain())
    assert read_grid(tmp_path / "g").threads == 2
    # a version-1 file (no threads, no family) still reads
    v1 = {"version": 1, "base_config": base.to_dict(), "seeds": [0],
          "entries": [{"label": "SGD", "optimizer": "sgd", "lr": 0.1,
                       "optimizer_kwargs": {}, "overrides": {}}]}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "grid.json").write_text(json.dumps(v1))
    old = read_grid(tmp_path / "old")
    assert old.threads is None and old.entries[0].family is None and old.seeds == [0]
