"""mL-BFGS on 1 and 2 ranks: the same curve, half the curvature history per rank (issue 12).

``python scripts/mlbfgs_two_ranks.py config --lr LR --out DIR [--epochs E --width W ...]``
    writes ``DIR/one_rank.json`` (batch B) and ``DIR/two_ranks.json`` (batch B/2 per rank, the
    same global batch) for ``python -m tamegrad.train``.
``torchrun --nproc_per_node 2 scripts/mlbfgs_two_ranks.py memory --config DIR/one_rank.json``
    (or without torchrun for 1 rank) builds the run's model and optimizer exactly as the
    trainer does, takes ``update_period + 1`` steps on random data (so every block has its
    history allocated and one pair stored) and prints each rank's
    :meth:`~tamegrad.optim.MLBFGS.history_bytes` and the blocks it owns.
``python scripts/mlbfgs_two_ranks.py compare DIR/one DIR/two``
    prints the two runs' metrics side by side (per epoch: test accuracy, train loss,
    seconds) and the largest differences.

``scripts/mlbfgs_two_ranks.sh`` runs the three. The 2-rank run is not bitwise the 1-rank one:
DDP gives each rank half of every global batch, so batch-norm statistics come from 64 images,
not 128 (the optimizer itself is bitwise equal on equal gradients: tests/test_mlbfgs_ddp.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from tamegrad.experiments.mlbfgs import MLBFGS_OPTIONS
from tamegrad.train.config import TrainConfig


def _config(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from tamegrad.experiments import suite_run

    base = suite_run("mlbfgs-cifar10", args.profile).base
    one = replace(base, optimizer="mlbfgs", optimizer_kwargs=dict(MLBFGS_OPTIONS), lr=args.lr,
                  batch_size=args.batch, seed=args.seed,
                  **({"epochs": args.epochs} if args.epochs else {}),
                  **({"train_subset": args.train_subset} if args.train_subset else {}),
                  **({"width": args.width} if args.width else {}))
    two = replace(one, batch_size=args.batch // 2)
    for name, cfg in (("one_rank", one), ("two_ranks", two)):
        (out / f"{name}.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    print(f"wrote {out}/one_rank.json (batch {one.batch_size}) and two_ranks.json "
          f"(batch {two.batch_size} per rank)")


def _memory(args: argparse.Namespace) -> None:
    import os

    from tamegrad.distributed import DistContext
    from tamegrad.models.factory import create_model
    from tamegrad.train.build import build_optimizer

    if "RANK" in os.environ:
        torch.distributed.init_process_group("gloo")
    ctx = DistContext.current()
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(json.loads(Path(args.config).read_text()))
    torch.manual_seed(cfg.seed)
    # the trainer's model (build_model) for CIFAR-10's shapes, without loading the images
    model = create_model(cfg.model, num_classes=10, input_shape=(3, 32, 32), width=cfg.width,
                         **cfg.model_options)
    opt = build_optimizer(cfg, model)
    gen = torch.Generator().manual_seed(0)
    for _ in range(int(cfg.optimizer_kwargs.get("update_period", 50)) * 2):
        opt.zero_grad()
        x = torch.randn(4, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    own = getattr(opt, "history_bytes")()  # noqa: B009 (MLBFGS only)
    rows = ctx.all_gather_object({"rank": ctx.rank, "history_bytes": own,
                                  "param_bytes": sum(p.numel() * p.element_size()
                                                     for p in model.parameters())})
    if ctx.is_main:
        total = sum(r["history_bytes"] for r in rows)
        for r in rows:
            print(f"world {ctx.world_size} rank {r['rank']}: history {r['history_bytes']} bytes "
                  f"({r['history_bytes'] / 2**20:.2f} MiB, {r['history_bytes'] / total:.3f} of "
                  f"the total; model {r['param_bytes'] / 2**20:.2f} MiB)")
        print(json.dumps({"world_size": ctx.world_size, "ranks": rows}))
    if ctx.enabled:
        torch.distributed.destroy_process_group()


def _compare(args: argparse.Namespace) -> None:
    def rows(d: str) -> list[dict]:
        return [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]

    a, b = rows(args.one), rows(args.two)
    print("| epoch | step | test acc 1 rank | test acc 2 ranks | train loss 1 | train loss 2 "
          "| s 1 rank | s 2 ranks |")
    print("|---|---|---|---|---|---|---|---|")
    for r1, r2 in zip(a, b):
        print(f"| {r1['epoch']} | {r1['step']} / {r2['step']} | {100 * r1['test_acc']:.2f} "
              f"| {100 * r2['test_acc']:.2f} | {r1['train_loss']:.4f} | {r2['train_loss']:.4f} "
              f"| {r1['wall_time']:.0f} | {r2['wall_time']:.0f} |")
    if a and b:
        print(f"max |test acc difference| = "
              f"{max(abs(x['test_acc'] - y['test_acc']) for x, y in zip(a, b)) * 100:.2f} points; "
              f"max |train loss difference| = "
              f"{max(abs(x['train_loss'] - y['train_loss']) for x, y in zip(a, b)):.4f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config")
    c.add_argument("--out", required=True)
    c.add_argument("--lr", type=float, default=0.1)
    c.add_argument("--batch", type=int, default=128, help="global batch (per rank: half)")
    c.add_argument("--profile", default="cpu")
    c.add_argument("--epochs", type=int)
    c.add_argument("--train-subset", type=int)
    c.add_argument("--width", type=int)
    c.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("memory")
    m.add_argument("--config", required=True)
    k = sub.add_parser("compare")
    k.add_argument("one")
    k.add_argument("two")
    args = p.parse_args(argv)
    {"config": _config, "memory": _memory, "compare": _compare}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
