"""Worker scaling of prioritized SGD: the same run with 1 and 2 (or more) ranks under torchrun.

Usage (from the repository root, TAMEGRAD_DATA set)::

    .venv/bin/python scripts/prioritized_scaling.py --out results/prioritized-scaling \\
        --model CNN --arm priority --epochs 10 --ranks 1 2

For each rank count W it runs ``torchrun --standalone --nproc_per_node W -m tamegrad.cli train``
with the ``prioritized-cifar10`` cpu setting of that model and arm (the suite's lr, target,
data subset, schedule), the **global** batch fixed (``--global-batch``, default the suite's
128: each rank gets 128 / W, so every W trains on the same global batches drawn from the same
sampler table and seed), gloo, and ``OMP_NUM_THREADS=1`` per rank (W ranks use W cores). Then it
writes ``OUT/scaling.md``: per W, samples per second (optimizer steps x global batch /
``wall_time``; evaluation included), the sampler's bytes sent/received per step and its
bookkeeping seconds, the final test accuracy and the epochs and seconds to the suite's target
(:mod:`tamegrad.train.targets`). Finished runs (``summary.json`` completed) are not re-run.

What this can show on a 2-core machine: that the 2-rank run is correct (same global batches,
accuracy within seed noise of the 1-rank run) and what the per-step exchange costs in bytes and
time on loopback; with 2 free cores, how much of the ideal 2x throughput two single-thread
ranks reach. What it cannot show: scaling beyond 2 ranks, network latency or bandwidth
between machines, or a speed-up when the 2 cores are shared with other jobs (then the ranks
wait for each other at every all-reduce and the number measures the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tamegrad.experiments.prioritized import ARMS, LR, MODELS, TARGETS, prioritized_base
from tamegrad.experiments.suites import suite_run
from tamegrad.train.run_folder import RunFolder
from tamegrad.train.targets import Target, first_reached


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train_args(model: str, arm: str, epochs: int, per_rank_batch: int, seed: int,
                out: Path) -> list[str]:
    base = suite_run("prioritized-cifar10", "cpu").base
    sampler, options = ARMS[arm]
    over = MODELS[model]
    args = [
        "train", "--dataset", base.dataset, "--model", over["model"],
        "--width", str(base.width), "--optimizer", "sgd", "--opt", "momentum=0.9",
        "--lr", str(LR[model]), "--weight-decay", str(base.weight_decay),
        "--batch-size", str(per_rank_batch), "--epochs", str(epochs),
        "--schedule", base.schedule, "--train-subset", str(base.train_subset),
        "--eval-batch-size", str(base.eval_batch_size), "--seed", str(seed),
        "--device", "cpu", "--threads", "1", "--sampler", sampler, "--out", str(out),
        "--norm-mean", *map(str, base.norm_mean or ()),
        "--norm-std", *map(str, base.norm_std or ()),
    ]
    for k, v in over.get("model_options", {}).items():
        args += ["--model-opt", f"{k}={v!r}"]
    for k, v in options.items():
        args += ["--sampler-options", f"{k}={v!r}"]
    return args


def run_one(ranks: int, args: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "tamegrad.cli", *args]
    with open(log, "w") as fh:
        subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True)


def measure(run_dir: Path, ranks: int, global_batch: int, target: Target) -> dict[str, Any]:
    rows = RunFolder(run_dir).read_metrics()
    if not rows:
        raise RuntimeError(f"{run_dir} has no metrics")
    last = rows[-1]
    hit = first_reached(rows, target)
    steps = sum(float(r.get("sampler_steps", 0)) for r in rows) or float(last["step"])
    return {
        "ranks": ranks,
        "samples_per_second": last["step"] * global_batch / last["wall_time"],
        "wall_time": last["wall_time"],
        "final_test_acc": last["test_acc"],
        "epochs_to_target": None if hit is None else hit.epoch,
        "seconds_to_target": None if hit is None else hit.seconds,
        "bytes_sent_per_step": last.get("sampler_bytes_sent_per_step"),
        "bytes_received_per_step": last.get("sampler_bytes_received_per_step"),
        "sampler_seconds_per_step": sum(float(r.get("sampler_bookkeeping_seconds", 0.0))
                                        for r in rows) / steps,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", choices=list(MODELS), default="CNN")
    p.add_argument("--arm", choices=list(ARMS), default="priority")
    cpu = suite_run("prioritized-cifar10", "cpu").base
    p.add_argument("--epochs", type=int, default=cpu.epochs)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--global-batch", type=int, default=prioritized_base().batch_size)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    target = Target("test_acc", TARGETS["cpu"][a.model])
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    for w in a.ranks:
        if a.global_batch % w:
            raise SystemExit(f"--global-batch {a.global_batch} is not a multiple of {w} ranks")
        run_dir = a.out / f"{a.model}_{a.arm}_w{w}"
        if RunFolder(run_dir).status() != "completed":
            args = (["train", "--resume", str(run_dir), "--threads", "1"] if run_dir.exists()
                    else _train_args(a.model, a.arm, a.epochs, a.global_batch // w, a.seed,
                                     run_dir))
            print(f"running {w} rank(s) -> {run_dir}", flush=True)
            run_one(w, args, a.out / f"{a.model}_{a.arm}_w{w}.log")
        results.append(measure(run_dir, w, a.global_batch, target))
    base = results[0]["samples_per_second"]
    lines = [
        f"# Worker scaling: {a.model} {a.arm}, global batch {a.global_batch}, {a.epochs} epochs, "
        f"seed {a.seed}, target test acc >= {100 * target.value:g}%", "",
        "| ranks | samples/s | vs 1st | wall s | final test acc (%) | epochs to target "
        "| seconds to target | bytes sent / step / rank | bytes received / step / rank "
        "| sampler ms / step |",
        "|---" * 10 + "|",
    ]

    def f(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    for r in results:
        lines.append(
            f"| {r['ranks']} | {r['samples_per_second']:.0f} "
            f"| {r['samples_per_second'] / base:.2f}x | {r['wall_time']:.0f} "
            f"| {100 * r['final_test_acc']:.2f} | {f(r['epochs_to_target'], '.2f')} "
            f"| {f(r['seconds_to_target'], '.0f')} | {f(r['bytes_sent_per_step'], '.0f')} "
            f"| {f(r['bytes_received_per_step'], '.0f')} "
            f"| {1000 * r['sampler_seconds_per_step']:.2f} |")
    text = "\n".join(lines) + "\n"
    (a.out / "scaling.md").write_text(text)
    (a.out / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
