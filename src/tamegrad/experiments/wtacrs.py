"""WTA-CRS's fine-tuning emulation on Tiny Shakespeare (Liu et al., NeurIPS 2023; issue 14).

The paper fine-tunes pre-trained transformers; we emulate that with a character-level ``gpt``:

``wtacrs-shakespeare-pretrain`` (v1)
    Stage 1: one run (seed 0) pre-training the gpt with exact gradients on the first half of the
    corpus (``dataset_options={"span": (0, 0.5)}``: its first 90% train, last 10% test).

``wtacrs-shakespeare`` (v1)
    Stage 2: fine-tuning on the second half (``span=(0.5, 1)``) from stage 1's weights
    (``init_from``), 3 seeds, with exact gradients, WTA-CRS at keep_frac 0.3 and 0.1, plain CRS
    at 0.3, top-k at 0.3 (biased ablation), and exact gradients at the batch whose activation
    bytes equal WTA-CRS 0.3's at the base batch (:data:`EQUAL_MEMORY_BATCH`, computed by
    :func:`equal_memory_batch`). Each profile's ``init_from`` is stage 1's run folder at the
    CLI's default output folder, ``results/wtacrs-shakespeare-pretrain-<profile>/pretrain/seed0``
    relative to the working directory: run stage 1 first, from the same directory::

        tamegrad reproduce wtacrs-shakespeare-pretrain --profile cpu
        tamegrad reproduce wtacrs-shakespeare --profile cpu

    (a missing or unfinished stage 1 makes every stage-2 run fail with that message). The
    report adds a table of final test bits per character, activation bytes (the runs'
    ``mem_activation_bytes``: first micro-batch of each epoch) and seconds per step, and
    ``curves_step.png`` (test bpc against optimizer steps).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tamegrad.train.config import TrainConfig
from tamegrad.train.grid import GridEntry, read_grid, run_dir_for

from ._suite import ProfileSpec, Suite, SuiteRun

VOCAB = 65  # Tiny Shakespeare's characters

#: gpt size, context and batch per profile (TrainConfig changes shared by both stages).
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"width": 32, "model_options": {"n_layer": 2, "n_head": 2}, "seq_len": 32,
              "batch_size": 8},
    "cpu": {"width": 128, "model_options": {"n_layer": 4, "n_head": 4}, "seq_len": 128,
            "batch_size": 32},
    "full": {"width": 384, "model_options": {"n_layer": 6, "n_head": 6}, "seq_len": 256,
             "batch_size": 64},
}

#: Exact-gradient batch whose activation bytes fit WTA-CRS 0.3's at the profile's batch:
#: ``equal_memory_batch(MODEL_SIZES[p])`` (float32, CPU, measured by ActivationMeter over
#: forward and backward, 2026-12-01; tests/test_wtacrs_suite.py recomputes smoke and cpu;
#: full took 624 s on 1 CPU thread).
EQUAL_MEMORY_BATCH: dict[str, int] = {"smoke": 6, "cpu": 25, "full": 50}

#: Corpus parts (``tinyshakespeare(span=...)``); smoke uses 2% slices so evaluation is instant.
SPANS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "smoke": ((0.0, 0.02), (0.5, 0.52)),
    "cpu": ((0.0, 0.5), (0.5, 1.0)),
    "full": ((0.0, 0.5), (0.5, 1.0)),
}

#: Fine-tuning arms: label -> (estimator, keep_frac); the equal-memory arm is added per profile.
ARMS: dict[str, tuple[str | None, float | None]] = {
    "exact": (None, None),
    "WTA-CRS 0.3": ("wtacrs", 0.3),
    "WTA-CRS 0.1": ("wtacrs", 0.1),
    "CRS 0.3": ("crs", 0.3),
    "top-k 0.3": ("topk", 0.3),
}

PRETRAIN_SUITE = "wtacrs-shakespeare-pretrain"
PRETRAIN_LABEL = "pretrain"


def pretrain_folder(profile: str) -> str:
    """Stage 1's run folder at the CLI's default ``--out`` (relative to the working dir)."""
    return f"results/{PRETRAIN_SUITE}-{profile}/{PRETRAIN_LABEL}/seed0"


def _base(lr: float, epochs: int) -> TrainConfig:
    sizes = MODEL_SIZES["full"]
    return TrainConfig(
        dataset="tinyshakespeare", model="gpt", width=sizes["width"],
        model_options=dict(sizes["model_options"]), seq_len=sizes["seq_len"],
        batch_size=sizes["batch_size"], optimizer="adamw", lr=lr, weight_decay=0.01,
        schedule="cosine", epochs=epochs, clip_grad_norm=1.0, augment=False,
        eval_batch_size=128,
    )


def pretrain_base() -> TrainConfig:
    """AdamW lr 1e-3, weight decay 0.01, cosine, clip 1.0, on the first half."""
    return replace(_base(1e-3, 10), dataset_options={"span": SPANS["full"][0]})


def finetune_base() -> TrainConfig:
    """AdamW lr 3e-4 (fine-tuning), cosine, clip 1.0, on the second half."""
    return replace(_base(3e-4, 5), dataset_options={"span": SPANS["full"][1]})


def finetune_entries(profile: str = "full") -> list[GridEntry]:
    """The arms of :data:`ARMS` plus ``exact equal-memory (batch N)`` for ``profile``."""
    entries = []
    for label, (method, frac) in ARMS.items():
        over: dict[str, Any] = {"measure_activations": True}
        if method is not None:
            over.update(estimator=method, keep_frac=frac)
        entries.append(GridEntry(label, "adamw", None, {}, overrides=over))
    batch = EQUAL_MEMORY_BATCH[profile]
    entries.append(GridEntry(f"exact equal-memory (batch {batch})", "adamw", None, {},
                             overrides={"batch_size": batch, "measure_activations": True}))
    return entries


def equal_memory_batch(sizes: dict[str, Any], *, method: str = "wtacrs", keep_frac: float = 0.3,
                       max_batch: int = 4096) -> int:
    """The largest exact-gradient batch whose activation bytes are <= those of ``method`` at
    ``keep_frac`` and ``sizes["batch_size"]`` on the gpt of ``sizes`` (MODEL_SIZES' layout).

    Both measured with :class:`~tamegrad.estimators.ActivationMeter` over forward and backward
    of a step on random tokens (the bytes do not depend on the values); the converted model
    makes one step first, so the measured step uses cached gradient norms as in training.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    from tamegrad.estimators import batch_context, convert, largest_batch_that_fits
    from tamegrad.estimators import measure_activation_bytes as measure
    from tamegrad.models import create_model

    t = int(sizes["seq_len"])

    def build() -> nn.Module:
        torch.manual_seed(0)
        return create_model("gpt", num_classes=VOCAB, input_shape=(t,), width=sizes["width"],
                            **sizes["model_options"])

    def step_of(model: nn.Module) -> Callable[[int], None]:
        g = torch.Generator().manual_seed(1)

        def step(b: int) -> None:
            x = torch.randint(0, VOCAB, (b, t + 1), generator=g)
            with batch_context(model, torch.arange(b)):
                logits = model(x[:, :-1])
            F.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1)).backward()
            model.zero_grad(set_to_none=True)

        return step

    batch = int(sizes["batch_size"])
    converted = convert(build(), method, keep_frac=keep_frac)
    step = step_of(converted)
    step(batch)  # first visit: the cache now holds gradient norms
    budget = measure(step, batch, model=converted)
    exact = build()
    return largest_batch_that_fits(step_of(exact), budget, model=exact, max_batch=max_batch)


def _mean(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def wtacrs_report(out: Path, profile: str) -> str:
    """Final test bpc, activation bytes and seconds per step per arm, and the bpc curves."""
    from tamegrad.train.plot import plot_runs
    from tamegrad.train.run_folder import RunFolder

    grid = read_grid(out)
    rows: list[tuple[str, Any, Any, Any, int, int]] = []
    for e in grid.entries:
        bpc, mem, sps = [], [], []
        for seed in grid.seeds:
            folder = RunFolder(run_dir_for(out, e.label, seed))
            metrics = folder.read_metrics()
            if folder.status() != "completed" or not metrics:
                continue
            bpc.append(float(metrics[-1]["test_bpc"]))
            mem += [float(r["mem_activation_bytes"]) for r in metrics
                    if "mem_activation_bytes" in r]
            sps.append(float(metrics[-1]["wall_time"]) / max(1, int(metrics[-1]["step"])))
        batch = int(e.overrides.get("batch_size", grid.base.batch_size))
        rows.append((e.label, _mean(bpc), _mean(mem), _mean(sps), batch, len(bpc)))
    if not any(r[1] for r in rows):
        return ""
    ref = next((r for r in rows if r[0] == "exact" and r[1]), None)
    lines = ["## Fine-tuning on the second half: final test bpc, activation bytes, step time",
             "", "| arm | batch | n | final test bpc | Δ vs exact | activation MB | x exact | "
             "s / step | x exact |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, bpc, mem, sps, batch, n in rows:
        if bpc is None:
            lines.append(f"| {label} | {batch} | 0/{len(grid.seeds)} | - | - | - | - | - | - |")
            continue
        d = f"{bpc[0] - ref[1][0]:+.3f}" if ref else "-"
        mx = f"{mem[0] / ref[2][0]:.3f}" if ref and mem and ref[2] else "-"
        tx = f"{sps[0] / ref[3][0]:.2f}" if ref and sps and ref[3] else "-"
        mb = f"{mem[0] / 1e6:.1f}" if mem else "-"
        lines.append(f"| {label} | {batch} | {n}/{len(grid.seeds)} | {bpc[0]:.3f} ± {bpc[1]:.3f} "
                     f"| {d} | {mb} | {mx} | {sps[0]:.2f} | {tx} |")
    lines += ["", "bpc: mean ± sample std over the completed seeds of the last evaluation; "
              "activation MB: mean of `mem_activation_bytes` (ActivationMeter, first "
              "micro-batch of every epoch, parameters and the gradient-norm cache excluded); "
              "s / step: `wall_time` / optimizer steps (includes the per-epoch evaluation, the "
              "same test split for every arm)."]
    try:
        plot_runs(out, out / "curves_step.png", title=f"wtacrs-shakespeare ({profile})", x="step")
        lines.append("Curves against steps: `curves_step.png`")
    except FileNotFoundError:
        pass
    return "\n".join(lines)


@dataclass(frozen=True)
class _PerProfileSuite(Suite):
    """A suite whose entries depend on the profile (the equal-memory batch does)."""

    entries_for: Callable[[str], list[GridEntry]] | None = None

    def run(self, profile: str) -> SuiteRun:
        spec = super().run(profile)
        return spec if self.entries_for is None else replace(
            spec, entries=self.entries_for(profile))


def _changes(profile: str, stage: int, **more: Any) -> dict[str, Any]:
    sizes = {k: v for k, v in MODEL_SIZES[profile].items()}
    return {**sizes, "dataset_options": {"span": SPANS[profile][stage]}, **more}


def _pretrain_entries() -> list[GridEntry]:
    return [GridEntry(PRETRAIN_LABEL, "adamw")]


WTACRS_SHAKESPEARE_PRETRAIN = Suite(
    PRETRAIN_SUITE,
    1,
    "stage 1 of wtacrs-shakespeare: pre-train the gpt with exact gradients on the first half "
    "of Tiny Shakespeare (one run)",
    pretrain_base,
    _pretrain_entries,
    {
        "smoke": ProfileSpec(
            _changes("smoke", 0, epochs=2, limit_train_batches=3, device="cpu"), (0,),
            "keeps the suite working (CI): 2-layer width-32 gpt, 2% of the corpus, 6 steps"),
        "cpu": ProfileSpec(
            _changes("cpu", 0, epochs=8, device="cpu"), (0,),
            "4-layer width-128 gpt, context 128, batch 32, 8 epochs of the first half "
            "(3,919 windows, 122 steps per epoch)"),
        "full": ProfileSpec(
            _changes("full", 0), (0,),
            "6-layer width-384 gpt, context 256, batch 64, 10 epochs (GPU)"),
    },
)

WTACRS_SHAKESPEARE = _PerProfileSuite(
    "wtacrs-shakespeare",
    1,
    "WTA-CRS fine-tuning emulation: gpt pre-trained on the first half of Tiny Shakespeare "
    "(wtacrs-shakespeare-pretrain), fine-tuned on the second half with exact, WTA-CRS 0.3/0.1, "
    "CRS 0.3, top-k 0.3 and exact at equal activation memory; 3 seeds",
    finetune_base,
    finetune_entries,
    {
        "smoke": ProfileSpec(
            _changes("smoke", 1, epochs=2, limit_train_batches=2, device="cpu",
                     init_from=pretrain_folder("smoke")), (0,),
            "keeps the suite working (CI): numbers are noise"),
        "cpu": ProfileSpec(
            _changes("cpu", 1, epochs=6, limit_train_batches=40, device="cpu",
                     init_from=pretrain_folder("cpu")), (0, 1, 2),
            "4-layer width-128 gpt, batch 32 (equal-memory arm 25), 6 x 40 steps on the "
            "second half, evaluated after every 40 steps, 3 seeds"),
        "full": ProfileSpec(
            _changes("full", 1, init_from=pretrain_folder("full")), (0, 1, 2),
            "6-layer width-384 gpt, context 256, batch 64 (equal-memory arm 50), 5 epochs of "
            "the second half (GPU)"),
    },
    report=wtacrs_report,
    entries_for=finetune_entries,
)
