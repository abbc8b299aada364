"""The Generalized SignSGD experiment suites: ``gssgd-cifar10`` and ``gssgd-shakespeare``."""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tamegrad.data import default_data_dir
from tamegrad.experiments import (
    SUITES,
    available_suites,
    extend_sweeps,
    prepare_suite,
    run_suite,
    suite_run,
)
from tamegrad.experiments.gssgd import CLIPPED_MOMENTUM_CLIP
from tamegrad.experiments.sweeps import MAX_EXTENSIONS_PER_SIDE, batch_lr_scale
from tamegrad.train.grid import GridEntry, entry_config, slugify
from tamegrad.train.sweep import format_lr, round_lr

DOCS = Path(__file__).resolve().parents[1] / "docs" / "GSSGD_EXPERIMENTS.md"

#: suite -> (large batch, data file, the paper's tuned values at the large batch)
SUITE_FACTS = {
    "gssgd-cifar10": (
        128,
        "cifar10-jpeg.tar.gz",
        {"GSSGD": 2e-4, "Adam": 9e-4, "SGD": 0.07, "Clipped SGD": 0.5, "Normalized SGD": 0.1},
    ),
    "gssgd-shakespeare": (
        64,
        "tinyshakespeare.txt",
        {"GSSGD": 1e-3, "Adam": 2e-3, "SGD": 1.0, "Clipped SGD": 50.0, "Normalized SGD": 2.0},
    ),
}
#: label prefix -> registered optimizer of the six families
FAMILIES = {
    "GSSGD": "gssgd",
    "Adam": "adam",
    "SGD": "sgd",
    "Clipped SGD": "clipped-sgd",
    "Clipped momentum": "sgd",
    "Normalized SGD": "normalized-sgd",
}
#: gradient clipping threshold of the clipped-SGD family, per suite (see the docs)
CLIPPED_SGD_MAX_NORM = {"gssgd-cifar10": 2.0, "gssgd-shakespeare": 0.2}

LABEL = re.compile(r"^(?P<family>.+?)(?: c=[0-9.]+)? lr=(?P<lr>\S+) b(?P<batch>\d+)$")


def _family(entry: GridEntry) -> str:
    match = LABEL.match(entry.label)
    assert match, entry.label
    # the entry carries its sweep family; the label shows it (with the clip setting)
    assert entry.family is not None and entry.family.startswith(match["family"])
    return match["family"]


def _by_family_and_batch(entries: list[GridEntry]) -> dict[tuple[str, int], list[GridEntry]]:
    groups: dict[tuple[str, int], list[GridEntry]] = defaultdict(list)
    for e in entries:
        groups[(_family(e), e.overrides["batch_size"])].append(e)
    return groups


def _lrs(entries: list[GridEntry]) -> list[float]:
    lrs = [e.lr for e in entries]
    assert all(lr is not None and lr > 0 for lr in lrs)  # every entry sets its own lr
    return [float(lr) for lr in lrs if lr is not None]


SUITE_NAMES = sorted(SUITE_FACTS)


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_suite_has_the_three_profiles(name: str) -> None:
    assert name in available_suites()
    assert {"smoke", "cpu", "full"} <= set(SUITES[name].profiles)
    assert SUITES[name].version == 1
    for profile in ("smoke", "cpu", "full"):
        run = suite_run(name, profile)
        assert run.base.schedule == "constant"
        assert run.seeds and run.notes
        # the same grid in every profile, and every cell is a valid config
        assert [e.label for e in run.entries] == [e.label for e in suite_run(name, "cpu").entries]
        for e in run.entries:
            cfg = entry_config(run.base, e, run.seeds[0])
            assert cfg.schedule == "constant"
    assert suite_run(name, "smoke").base.device == "cpu"
    assert suite_run(name, "cpu").base.device == "cpu"


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_six_families_three_lrs_at_both_batch_sizes(name: str) -> None:
    large, _, _ = SUITE_FACTS[name]
    entries = suite_run(name, "cpu").entries
    assert len({e.label for e in entries}) == len(entries)
    assert len({slugify(e.label) for e in entries}) == len(entries)  # distinct run folders
    groups = _by_family_and_batch(entries)
    assert {fam for fam, _ in groups} == set(FAMILIES)
    assert {batch for _, batch in groups} == {8, large}
    for (fam, _batch), members in groups.items():
        assert {e.optimizer for e in members} == {FAMILIES[fam]}
        lrs = _lrs(members)
        assert len(set(lrs)) >= 3 and lrs == sorted(lrs)
        # the label shows the exact learning rate
        for e in members:
            match = LABEL.match(e.label)
            assert match and float(match["lr"]) == e.lr
    assert len(entries) == len(FAMILIES) * 2 * 3


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_sweeps_are_centred_on_the_paper_and_shifted_for_batch_8(name: str) -> None:
    large, _, paper = SUITE_FACTS[name]
    groups = _by_family_and_batch(suite_run(name, "cpu").entries)
    scale = batch_lr_scale(8, large)
    assert scale == pytest.approx(math.sqrt(8 / large))
    for fam in FAMILIES:
        big = _lrs(groups[(fam, large)])
        small = _lrs(groups[(fam, 8)])
        assert big[1] == pytest.approx(3 * big[0], rel=0.01)
        assert big[2] == pytest.approx(3 * big[1], rel=0.01)
        assert small[1] == round_lr(big[1] * scale)
        if fam in paper:
            assert big[1] == paper[fam]
    if name == "gssgd-cifar10":  # the rule: batch 8 divides the centres by 4
        assert scale == 0.25


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_clip_settings_match_the_docs(name: str) -> None:
    text = DOCS.read_text()
    max_norm = CLIPPED_SGD_MAX_NORM[name]
    for e in suite_run(name, "cpu").entries:
        fam = _family(e)
        if fam == "Clipped SGD":
            assert e.optimizer_kwargs == {"momentum": 0.0, "max_norm": max_norm}
            assert "clip_grad_norm" not in e.overrides
            assert e.label.startswith(f"Clipped SGD c={max_norm:g} ")
        elif fam == "Clipped momentum":
            assert e.optimizer == "sgd"
            assert e.optimizer_kwargs == {"momentum": 0.9, "nesterov": True}
            assert e.overrides["clip_grad_norm"] == CLIPPED_MOMENTUM_CLIP == 0.1
        else:
            assert "clip_grad_norm" not in e.overrides
            assert "max_norm" not in e.optimizer_kwargs
        if fam == "SGD":
            assert e.optimizer_kwargs == {"momentum": 0.9, "nesterov": True}
        if fam == "Normalized SGD":
            assert e.optimizer_kwargs == {"momentum": 0.9}
        if fam in ("GSSGD", "Adam"):
            assert e.optimizer_kwargs == {"betas": (0.9, 0.999), "eps": 1e-8}
    assert f"`max_norm={max_norm:g}`" in text
    assert f"`clip_grad_norm={CLIPPED_MOMENTUM_CLIP:g}`" in text


def test_profiles_follow_the_docs() -> None:
    cifar = suite_run("gssgd-cifar10", "cpu")
    assert (cifar.base.model, cifar.base.width, cifar.base.train_subset) == ("resnet18", 16, 10_000)
    assert (cifar.base.dataset, cifar.base.epochs, cifar.base.weight_decay) == (
        "cifar10-jpeg", 5, 1e-4)
    assert cifar.base.norm_mean == (0.4914, 0.4822, 0.4465)
    assert cifar.base.norm_std == (0.2470, 0.2435, 0.2616)
    full = suite_run("gssgd-cifar10", "full")
    assert (full.base.width, full.base.epochs, full.base.train_subset) == (64, 164, None)
    text = suite_run("gssgd-shakespeare", "cpu").base
    assert (text.dataset, text.model, text.width, text.seq_len) == (
        "tinyshakespeare", "char-lstm", 256, 64)
    assert text.model_options["num_layers"] == 2 and text.epochs == 4
    assert text.train_subset is None and text.limit_train_batches is None
    # the profiles hand out fresh dicts: changing one config does not leak into the next
    text.model_options["num_layers"] = 3
    assert suite_run("gssgd-shakespeare", "cpu").base.model_options["num_layers"] == 2
    docs = DOCS.read_text()
    for command in ("tamegrad reproduce gssgd-cifar10 --profile cpu --out "
                    "results/gssgd-cifar10-cpu --workers 2",
                    "tamegrad reproduce gssgd-shakespeare --profile cpu --out "
                    "results/gssgd-shakespeare-cpu --workers 2"):
        assert command in docs


@pytest.mark.parametrize("folder", ["gssgd-cifar10-cpu", "gssgd-shakespeare-cpu"])
def test_docs_quote_the_committed_best_tables(folder: str) -> None:
    """A results table in the docs is the committed ``best.md``, line for line, or the docs say
    the suite has not been run yet: no number in the write-up without its results file."""
    docs = DOCS.read_text()
    best = DOCS.parents[1] / "results" / folder / "best.md"
    if f"results/{folder}/best.md" not in docs:
        assert f"`{folder}`: not yet run" in docs
        return
    table = [line for line in best.read_text().splitlines() if line.startswith("|")]
    assert len(table) > 2
    assert "\n".join(table) in docs


def test_format_lr() -> None:
    assert [format_lr(x) for x in (2e-4, 6.67e-5, 0.07, 0.0233, 5.83e-3, 10.0, 150.0)] == [
        "2e-4", "6.67e-5", "0.07", "0.0233", "5.83e-3", "10", "150"]
    assert round_lr(2e-4 / 3) == 6.67e-5


def _smoke(name: str, only: list[str], out: Path) -> str:
    if not (default_data_dir() / SUITE_FACTS[name][1]).exists():
        pytest.skip(f"{SUITE_FACTS[name][1]} not in $TAMEGRAD_DATA")
    start = time.process_time()  # CPU time: other jobs on a busy machine do not count
    table = run_suite(name, "smoke", out, only=only, progress=False)
    assert time.process_time() - start < 60
    results = (out / "results.md").read_text()
    assert results.strip() == table.strip()
    for label in only:
        assert f"| {label} | 1/1 |" in results
    meta = json.loads((out / "suite.json").read_text())
    assert (meta["suite"], meta["version"], meta["profile"]) == (name, 1, "smoke")
    return results


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_cifar10_smoke_runs_end_to_end(tmp_path: Path) -> None:
    only = ["GSSGD lr=2e-4 b128", "Clipped momentum c=0.1 lr=0.075 b8"]
    _smoke("gssgd-cifar10", only, tmp_path / "cifar")
    configs = sorted((tmp_path / "cifar").glob("*/seed0/config.json"))
    batches = {json.loads(p.read_text())["batch_size"] for p in configs}
    clips = {json.loads(p.read_text())["clip_grad_norm"] for p in configs}
    assert batches == {8, 128} and clips == {None, 0.1}


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_shakespeare_smoke_reports_bits_per_character(tmp_path: Path) -> None:
    only = ["GSSGD lr=1e-3 b64", "Clipped SGD c=0.2 lr=17.7 b8", "Normalized SGD lr=0.707 b8"]
    out = tmp_path / "text"
    results = _smoke("gssgd-shakespeare", only, out)
    assert "final test bpc" in results
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["label"] for r in rows] == [
        "GSSGD lr=1e-3 b64", "Clipped SGD c=0.2 lr=17.7 b8", "Normalized SGD lr=0.707 b8"]
    for r in rows:
        bpc = r["final_test_bpc_mean"]
        # 65 characters: a uniform guess costs log2(65) = 6.02 bits
        assert bpc is not None and 0 < bpc < 7
    best = (out / "best.md").read_text()
    for family in ("GSSGD", "Clipped SGD c=0.2", "Normalized SGD"):
        assert f"| {family} |" in best
    # --only ran one lr per family: a one-point "sweep" is never flagged as at its edge
    assert "| 64 | GSSGD | 1e-3 |" in best and "edge" not in best.split("\n\n", 2)[2]
    assert {p.name for p in out.glob("best_curves_b*.png")} == {
        "best_curves_b64.png", "best_curves_b8.png"}
    assert (out / "sweep.png").stat().st_size > 10_000


def _fake_rows(values: dict[str, float | None],
               entries: list[GridEntry] | None = None) -> list[dict[str, Any]]:
    """summarize()-like rows: one finished seed per label with the given accuracy."""
    by_label = {e.label: e for e in entries or []}
    rows = []
    for label, acc in values.items():
        e = by_label.get(label)
        rows.append({"label": label, "n": 1, "final_test_acc_mean": acc,
                     "final_test_acc_std": None, "final_test_acc_values": [acc], "missing": [],
                     "family": e.family if e else None, "lr": e.lr if e else 0.1,
                     "batch_size": e.overrides.get("batch_size", 128) if e else 128})
    return rows


def test_extend_sweeps_grows_edges_until_bracketed_or_capped(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    _, entries, _ = prepare_suite("gssgd-cifar10", "smoke", out)
    n_own = len(entries)
    centres = {e.label for i, e in enumerate(entries) if i % 3 == 1}
    acc = {e.label: 0.55 if e.label in centres else 0.5 for e in entries}  # centres best
    acc["GSSGD lr=6.67e-5 b128"] = 0.6  # best at the low edge -> one point lower
    acc["SGD lr=0.21 b128"] = 0.6  # best at the high edge -> one point higher
    acc["GSSGD lr=1.67e-5 b8"] = None  # an unfinished point: that sweep is left alone
    acc["GSSGD lr=5e-5 b8"] = 0.7
    rows = _fake_rows(acc, entries)
    rows[[r["label"] for r in rows].index("GSSGD lr=1.67e-5 b8")]["n"] = 0
    assert extend_sweeps("gssgd-cifar10", "smoke", out, rows) == [
        "GSSGD lr=2.22e-5 b128", "SGD lr=0.63 b128"]
    meta = json.loads((out / "suite.json").read_text())
    assert meta["extensions"] == [
        {"family": "GSSGD", "batch_size": 128, "lr": 2.22e-5},
        {"family": "SGD", "batch_size": 128, "lr": 0.63}]
    # the next run of the suite includes them, each in its family's lr order
    _, entries, _ = prepare_suite("gssgd-cifar10", "smoke", out)
    labels = [e.label for e in entries]
    assert len(labels) == n_own + 2
    assert labels[:4] == ["GSSGD lr=2.22e-5 b128", "GSSGD lr=6.67e-5 b128",
                          "GSSGD lr=2e-4 b128", "GSSGD lr=6e-4 b128"]
    new = entries[labels.index("SGD lr=0.63 b128")]
    old = entries[labels.index("SGD lr=0.21 b128")]
    assert new.lr == 0.63 and (new.optimizer, new.optimizer_kwargs, new.overrides) == (
        old.optimizer, old.optimizer_kwargs, old.overrides)
    # --only keeps an extension whose label matches
    _, only, _ = prepare_suite("gssgd-cifar10", "smoke", out, only=["SGD lr=0.63"])
    assert [e.label for e in only] == ["SGD lr=0.63 b128"]

    # the GSSGD optimum keeps moving down: the sweep grows to its cap and then stops
    lr = 2.22e-5
    for _ in range(MAX_EXTENSIONS_PER_SIDE + 1):
        acc = {e.label: 0.55 if e.label in centres else 0.5 for e in entries}
        acc[next(e.label for e in entries if e.lr == lr and e.label.startswith("GSSGD"))] = 0.9
        added = extend_sweeps("gssgd-cifar10", "smoke", out, _fake_rows(acc, entries))
        _, entries, _ = prepare_suite("gssgd-cifar10", "smoke", out)
        if not added:
            break
        lr = next(e.lr for e in entries if e.label == added[0])
    gssgd = [e.lr for e in entries if e.label.endswith("b128") and e.label.startswith("GSSGD")]
    assert len(gssgd) == 3 + MAX_EXTENSIONS_PER_SIDE and not added
    assert min(gssgd) == pytest.approx(6.67e-5 / 3**MAX_EXTENSIONS_PER_SIDE, rel=0.01)


def test_extend_sweeps_ignores_grids_that_are_not_sweeps(tmp_path: Path) -> None:
    prepare_suite("gssgd-cifar10", "smoke", tmp_path)
    assert extend_sweeps("gssgd-cifar10", "smoke", tmp_path, _fake_rows({"SGD": 0.5})) == []


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_cli_reproduce_writes_the_sweep_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tamegrad.cli import main

    if not (default_data_dir() / "tinyshakespeare.txt").exists():
        pytest.skip("tinyshakespeare.txt not in $TAMEGRAD_DATA")
    out = tmp_path / "cli"
    code = main(["reproduce", "gssgd-shakespeare", "--profile", "smoke", "--out", str(out),
                 "--only", "GSSGD lr=", "--extend-edges"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| GSSGD lr=1e-3 b64 | 1/1 |" in printed
    for name in ("results.md", "curves.png", "best.md", "best_curves_b64.png", "sweep.png"):
        assert (out / name).is_file(), name
    # every GSSGD sweep ends bracketed, or grown to its cap on the side of its best
    rows = json.loads((out / "results.json").read_text())["rows"]
    extensions = json.loads((out / "suite.json").read_text()).get("extensions", [])
    assert len(rows) == 6 + len(extensions)
    assert all(r["n"] == 1 for r in rows)
    for batch in (64, 8):
        scored = sorted((float(r["lr"]), r["final_test_bpc_mean"]) for r in rows
                        if r["label"].endswith(f" b{batch}"))
        best = min(range(len(scored)), key=lambda i: scored[i][1])
        grown = sum(e["batch_size"] == batch for e in extensions)
        assert 0 < best < len(scored) - 1 or grown == MAX_EXTENSIONS_PER_SIDE
        if grown:
            assert "adding GSSGD lr=" in printed
